"""``labsight track --batch B -o tracks.csv``: cells followed through the time-lapses of a batch.

A movie segmented one time point per job (``labsight submit cells movie.tif --each-plane t
--batch B``: jobs named ``movie.tif[t=0]``, ``movie.tif[t=1]`` ...) is linked here, in this
process, by :func:`labsight.tracking.link_frames`. ``labsight track JOB_ID`` writes the same
from a ``cell-tracks`` job, whose worker segmented and linked the movie. Written:

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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from labsight.time_lapse import LINKED_MASKS, TRACKED_PIPELINES

if TYPE_CHECKING:
    import pandas as pd

    from labsight.time_lapse import Movie, TrackedMovie

__all__ = ["add_parser", "cmd_track"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
"""Files ``-o`` writes, by suffix."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``track`` to the ``labsight`` subcommands."""
    track = sub.add_parser("track", help="follow cells through the time-lapses of a batch "
                           "(jobs named FILE[t=N], as submit --each-plane t makes them), or "
                           "write a cell-tracks job's tracks")
    track.add_argument("job_id", nargs="?", default="", help="a cell-tracks job (or --batch)")
    track.add_argument("--batch", default="", metavar="BATCH_ID")
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
    from labsight.time_lapse import movies_of, track_movies

    if not (args.output or args.ctc or args.plot):
        raise SystemExit("labsight: give -o FILE, --ctc DIR or --plot FILE (or several)")
    if args.output and Path(args.output).suffix.lower() not in TABLE_SUFFIXES:
        raise SystemExit(f"labsight: -o {args.output}: name a {', '.join(TABLE_SUFFIXES)} file")
    if bool(args.job_id) == bool(args.batch):
        raise SystemExit("labsight: give a cell-tracks JOB_ID or --batch BATCH_ID")
    if args.job_id:
        return _write_job(args)
    with LabSightClient(args.gateway, token=args.token) as client:
        movies = movies_of(client.batch_results(args.batch), LINKED_MASKS[args.objects])
    if not movies:
        raise SystemExit(f"labsight: batch {args.batch} has no finished {' or '.join(TRACKED_PIPELINES)} "
                         "jobs named FILE[t=N] (submit with --each-plane t)")
    for movie in movies:
        _warn_about_gaps(movie)
    try:
        tracked = track_movies(movies, min_iou=args.min_iou, max_distance_um=args.max_distance_um)
    except ValueError as error:
        raise SystemExit(f"labsight: {error}") from None
    for each in tracked:
        print(f"labsight: {each.movie.name}: {len(each.movie.times)} time point(s), "
              f"{len(each.tracks.lineage)} track(s), {each.tracks.divisions()} division(s)",
              file=sys.stderr)
    if args.output:
        _write_rows([each.table for each in tracked], Path(args.output))
    if args.ctc:
        for each in tracked:
            _write_ctc(each, Path(args.ctc))
    if args.plot:
        from labsight.plots.tracks import tracks_figure

        tracks_figure([(each.movie.name, each.table) for each in tracked]).savefig(args.plot, dpi=120)
    return 0


def _write_job(args: argparse.Namespace) -> int:
    """What was asked, from a cell-tracks job's result: its tracks and lineage tables and its
    track labels (linked in the worker; --objects and the linking options are the job's)."""
    from labsight.client import LabSightClient

    with LabSightClient(args.gateway, token=args.token) as client:
        job = client.get(args.job_id)
        if job.pipeline != "cell-tracks":
            raise SystemExit(f"labsight: job {args.job_id} ran {job.pipeline}; give a cell-tracks "
                             "job, or the --batch of a movie's time points")
        result = client.result(args.job_id)
    name = job.input_name or args.job_id
    table = result.to_pandas("tracks").reset_index(drop=True)
    table.insert(0, "movie", name)
    if args.output:
        _write_rows([table], Path(args.output))
    if args.ctc:
        lineage = result.to_pandas("lineage")
        rows = np.column_stack([lineage.index.astype(np.int64), lineage.to_numpy(np.int64)])
        _write_ctc_files(Path(args.ctc) / _folder_name(name), list(result.tensor("track_labels")),
                         rows)
    if args.plot:
        from labsight.plots.tracks import tracks_figure

        tracks_figure([(name, table)]).savefig(args.plot, dpi=120)
    return 0


def _warn_about_gaps(movie: Movie) -> None:
    """Say where time points are missing: tracks are linked across them as if adjacent."""
    missing = sorted(set(range(movie.times[0], movie.times[-1] + 1)) - set(movie.times))
    if missing:
        print(f"labsight: {movie.name}: no finished job for t={missing[:10]}; the time points "
              "either side are linked as if adjacent", file=sys.stderr)


def _write_rows(tables: list[pd.DataFrame], path: Path) -> None:
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


def _write_ctc(tracked: TrackedMovie, root: Path) -> None:
    """The Cell Tracking Challenge's result layout of one movie linked here."""
    movie, tracks = tracked.movie, tracked.tracks
    _write_ctc_files(root / _folder_name(movie.name),
                     [tracks.relabelled(index, mask) for index, mask in enumerate(movie.masks)],
                     tracks.lineage)


def _write_ctc_files(folder: Path, masks: list[np.ndarray], lineage: np.ndarray) -> None:
    """maskTTT.tif (track ids) per time point, counted from 0 in order, and res_track.txt: one
    line per track, L B E P (id, first and last time point, parent)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(masks) - 1)))
    for index, mask in enumerate(masks):
        tifffile.imwrite(folder / f"mask{index:0{digits}d}.tif", mask)
    lines = [" ".join(str(int(v)) for v in row) for row in lineage]
    (folder / "res_track.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    print(f"labsight: {folder}: {len(masks)} masks and res_track.txt", file=sys.stderr)


def _folder_name(movie: str) -> str:
    """A movie's name as one folder name (its path's parts joined by _)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", movie).strip("_") or "movie"
