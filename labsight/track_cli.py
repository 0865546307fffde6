"""``labsight track --batch B -o tracks.csv``: cells followed through the time-lapses of a batch.

A movie segmented one time point per job (``labsight submit cells movie.tif --each-plane t
--batch B``: jobs named ``movie.tif[t=0]``, ``movie.tif[t=1]`` ...) is linked here, in this
process, by :func:`labsight.tracking.link_frames`. Written:

- ``-o FILE`` (``.csv``, ``.tsv`` or ``.parquet``): one row per cell per time point: ``movie``,
  ``t``, ``track_id``, ``parent_track_id`` (0 for none) and every column of the job's cells
  table (label, areas, centroid, shapes, intensities);
- ``--ctc DIR``: per movie, the Cell Tracking Challenge's layout, which its evaluation tools,
  napari and Fiji's TrackMate read: ``DIR/<movie>/mask000.tif`` ... (each cell's pixels hold its
  track id) and ``res_track.txt`` (track id, first and last time point, parent);
- ``--plot FILE``: each movie's tracks as paths of their centroids, divisions marked.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Movie", "add_parser", "cmd_track", "movies_of", "track_table"]

TIME_POINT = re.compile(r"^(?P<movie>.+)\[t=(?P<t>\d+)\]$")
"""A job name of one time point, as ``--each-plane t`` names them: ``movie.tif[t=3]``."""

TRACKED_PIPELINES = ("cells", "hpa-cells")
"""Pipelines whose results carry cell label masks to follow."""

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
"""Files ``-o`` writes, by suffix."""

LINKED_MASKS = {"cells": "cell_labels", "nuclei": "nucleus_labels"}
"""``--objects``: the result tensor whose objects are linked."""


@dataclass
class Movie:
    """The time points of one movie in a batch: their indices, cell masks, cells tables and
    pixel size (the first time point's)."""

    name: str
    times: list[int]
    masks: list[np.ndarray]
    tables: list[Any]
    pixel_size_um: float


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``track`` to the ``labsight`` subcommands."""
    track = sub.add_parser("track", help="follow cells through the time-lapses of a batch "
                           "(jobs named FILE[t=N], as submit --each-plane t makes them)")
    track.add_argument("--batch", required=True, metavar="BATCH_ID")
    track.add_argument("-o", "--output", default="", metavar="FILE",
                       help="one row per cell per time point: .csv, .tsv or .parquet")
    track.add_argument("--ctc", default="", metavar="DIR",
                       help="write the Cell Tracking Challenge's masks and res_track.txt per movie")
    track.add_argument("--plot", default="", metavar="FILE", help="draw the tracks (.png, .svg, .pdf)")
    track.add_argument("--objects", choices=sorted(LINKED_MASKS), default="cells",
                       help="link the cells' masks (default) or their nuclei's")
    track.add_argument("--min-iou", type=float, default=0.1,
                       help="overlapping cells pair at this intersection over union or more")
    track.add_argument("--max-distance-um", type=float, default=10.0,
                       help="cells that overlap nothing pair by centroid distance up to this "
                            "(0: never)")
    track.add_argument("--gateway", default=None, help="gateway address (default: from up)")
    track.add_argument("--token", default=None, help="bearer token (default: from up)")
    track.set_defaults(func=cmd_track)


def cmd_track(args: argparse.Namespace) -> int:
    """Fetch the batch's finished time points, link each movie and write what was asked."""
    from labsight.client import LabSightClient
    from labsight.tracking import link_frames

    if not (args.output or args.ctc or args.plot):
        raise SystemExit("labsight: give -o FILE, --ctc DIR or --plot FILE (or several)")
    if args.output and Path(args.output).suffix.lower() not in TABLE_SUFFIXES:
        raise SystemExit(f"labsight: -o {args.output}: name a {', '.join(TABLE_SUFFIXES)} file")
    with LabSightClient(args.gateway, token=args.token) as client:
        movies = movies_of(client.batch_results(args.batch), LINKED_MASKS[args.objects])
    if not movies:
        raise SystemExit(f"labsight: batch {args.batch} has no finished {' or '.join(TRACKED_PIPELINES)} "
                         "jobs named FILE[t=N] (submit with --each-plane t)")
    tables, tracked = [], []
    for movie in movies:
        _warn_about_gaps(movie)
        try:
            tracks = link_frames(movie.masks, pixel_size_um=movie.pixel_size_um,
                                 min_iou=args.min_iou, max_distance_um=args.max_distance_um)
        except ValueError as error:
            raise SystemExit(f"labsight: {movie.name}: {error}") from None
        tables.append(track_table(movie, tracks))
        tracked.append((movie, tracks))
        print(f"labsight: {movie.name}: {len(movie.times)} time point(s), {len(tracks.lineage)} "
              f"track(s), {tracks.divisions()} division(s)", file=sys.stderr)
    if args.output:
        _write_rows(tables, Path(args.output))
    if args.ctc:
        for movie, tracks in tracked:
            _write_ctc(movie, tracks, Path(args.ctc))
    if args.plot:
        from labsight.plots.tracks import tracks_figure

        tracks_figure([(movie.name, table) for movie, table in zip(movies, tables, strict=True)]
                      ).savefig(args.plot, dpi=120)
    return 0


def movies_of(finished: Any, mask: str = "cell_labels") -> list[Movie]:
    """The movies among a batch's (job, Result or None) pairs (``LabSightClient.batch_results``):
    jobs of a tracked pipeline named
    ``FILE[t=N]``, grouped by FILE and ordered by N. Each result's ``mask`` tensor (its cells'
    or nuclei's labels) and cells table are kept; other jobs are passed over."""
    found: dict[str, list[tuple[int, np.ndarray, Any, float | None]]] = defaultdict(list)
    for job, result in finished:
        match = TIME_POINT.match(job.input_name)
        if result is None or match is None or job.pipeline not in TRACKED_PIPELINES:
            continue
        found[match["movie"]].append((int(match["t"]), result.tensor(mask),
                                      result.to_pandas("cells"), result.pixel_size_um))
    movies = []
    for name in sorted(found):
        points = sorted(found[name], key=lambda point: point[0])
        movies.append(Movie(name, [p[0] for p in points], [p[1] for p in points],
                            [p[2] for p in points], points[0][3] or 1.0))
    return movies


def track_table(movie: Movie, tracks: Any) -> Any:
    """One row per cell per time point: movie, t, track_id, parent_track_id, then the cells
    table's columns (its row ids, the labels, as the index is dropped). A cell whose label the
    linked masks lack (a cell without a nucleus, when nuclei were linked) has track 0."""
    import pandas as pd

    parents = dict(zip(tracks.lineage[:, 0].tolist(), tracks.lineage[:, 3].tolist(), strict=True))
    parts = []
    for index, (t, table) in enumerate(zip(movie.times, movie.tables, strict=True)):
        track_of = dict(zip(tracks.labels[index].tolist(), tracks.track_ids[index].tolist(),
                            strict=True))
        ids = [track_of.get(int(label), 0) for label in table["label"]]
        head = pd.DataFrame({"movie": movie.name, "t": t, "track_id": ids,
                             "parent_track_id": [parents.get(i, 0) for i in ids]},
                            index=table.index)
        parts.append(pd.concat([head, table], axis=1))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _warn_about_gaps(movie: Movie) -> None:
    """Say where time points are missing: tracks are linked across them as if adjacent."""
    missing = sorted(set(range(movie.times[0], movie.times[-1] + 1)) - set(movie.times))
    if missing:
        print(f"labsight: {movie.name}: no finished job for t={missing[:10]}; the time points "
              "either side are linked as if adjacent", file=sys.stderr)


def _write_rows(tables: list[Any], path: Path) -> None:
    import pandas as pd

    from labsight.export import write_atomically

    frame = pd.concat(tables, ignore_index=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        write_atomically(path, lambda temporary: frame.to_parquet(temporary, index=False))
    else:
        write_atomically(path, lambda temporary: frame.to_csv(
            temporary, index=False, sep="\t" if suffix == ".tsv" else ","))
    print(f"labsight: {len(frame)} rows written to {path}", file=sys.stderr)


def _write_ctc(movie: Movie, tracks: Any, root: Path) -> None:
    """The Cell Tracking Challenge's result layout of one movie: maskTTT.tif (track ids, uint16)
    per time point, counted from 0 in order, and res_track.txt (L B E P)."""
    import tifffile

    folder = root / _folder_name(movie.name)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(movie.masks) - 1)))
    for index, mask in enumerate(movie.masks):
        tifffile.imwrite(folder / f"mask{index:0{digits}d}.tif", tracks.relabelled(index, mask))
    lines = [" ".join(str(int(v)) for v in row) for row in tracks.lineage]
    (folder / "res_track.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    print(f"labsight: {folder}: {len(movie.masks)} masks and res_track.txt", file=sys.stderr)


def _folder_name(movie: str) -> str:
    """A movie's name as one folder name (its path's parts joined by _)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", movie).strip("_") or "movie"
