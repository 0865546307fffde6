"""The movies of a batch, one job per time point, and their cells linked into tracks.

``labsight submit cells movie.tif --each-plane t`` makes a job of each time point, named
``movie.tif[t=3]``. Here the finished ones are gathered per movie in time order
(:func:`movies_of`), linked by :func:`labsight.tracking.link_frames` (:func:`track_movies`) and
tabled one row per cell per time point (:func:`track_table`); ``labsight track`` and
``LabSightClient.batch_tracks`` are built on them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas and scipy load when a movie is tracked, not with the CLI
    import pandas as pd

    from labsight.tracking import Tracks

__all__ = ["LINKED_MASKS", "TIME_POINT", "TRACKED_PIPELINES", "Movie", "TrackedMovie",
           "movies_of", "track_movies", "track_table"]

TIME_POINT = re.compile(r"^(?P<movie>.+)\[t=(?P<t>\d+)\]$")
"""A job name of one time point, as ``--each-plane t`` names them: ``movie.tif[t=3]``."""

TRACKED_PIPELINES = ("cells", "hpa-cells")
"""Pipelines whose results carry cell label masks to follow."""


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


@dataclass
class TrackedMovie:
    """A movie, its tracks and its table of one row per cell per time point."""

    movie: Movie
    tracks: Tracks
    table: pd.DataFrame


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


def track_table(movie: Movie, tracks: Tracks) -> pd.DataFrame:
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


def track_movies(movies: Sequence[Movie], *, min_iou: float = 0.1,
                 max_distance_um: float = 10.0) -> list[TrackedMovie]:
    """Link each movie's masks (:func:`labsight.tracking.link_frames`, at its pixel size) and
    table its cells; ValueError naming the movie for masks or settings it refuses."""
    from labsight.tracking import link_frames

    tracked = []
    for movie in movies:
        try:
            tracks = link_frames(movie.masks, pixel_size_um=movie.pixel_size_um,
                                 min_iou=min_iou, max_distance_um=max_distance_um)
        except ValueError as error:
            raise ValueError(f"{movie.name}: {error}") from None
        tracked.append(TrackedMovie(movie, tracks, track_table(movie, tracks)))
    return tracked
