"""Cell tracks to look at: each track's centroid path through a movie, divisions marked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb

MAX_MOVIES = 12
"""Movies drawn in one figure (a panel each); more would be too small to read."""

TRACKS_PIPELINE = "cell-tracks"


def is_tracks_result(result: pb.JobResult) -> bool:
    """True for a cell-tracks result (its table ``tracks``)."""
    return result.pipeline == TRACKS_PIPELINE and "tracks" in result.tables


def job_tracks_figure(result: pb.JobResult, name: str) -> Figure:
    """:func:`tracks_figure` of one cell-tracks job's result, its panel titled ``name``."""
    return tracks_figure([(name, Result(result).to_pandas("tracks"))])


def tracks_figure(movies: Sequence[tuple[str, pd.DataFrame]]) -> Figure:
    """A panel per movie (the first :data:`MAX_MOVIES`): every track's centroid path in image
    pixels, coloured by track, a dot where it begins, and a daughter's path joined to its
    mother's last centroid by a dashed line.

    Parameters
    ----------
    movies : sequence of (name, table)
        Each movie's rows as ``labsight track`` writes them (columns ``t``, ``track_id``,
        ``parent_track_id``, ``centroid_x``, ``centroid_y``).

    Raises
    ------
    ValueError
        For no movies, or a table without those columns.
    """
    if not movies:
        raise ValueError("no movies to draw")
    shown = movies[:MAX_MOVIES]
    columns = min(len(shown), 3)
    rows = -(-len(shown) // columns)
    figure = Figure(figsize=(5.5 * columns, 5.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (name, table) in zip(axes, shown, strict=False):
        _draw_movie(axis, name, table)
    for axis in axes[len(shown):]:
        axis.set_visible(False)
    figure.legend([Line2D([], [], color="0.3"), Line2D([], [], color="0.3", linestyle="--"),
                   Line2D([], [], color="0.3", marker="o", linestyle="")],
                  ["track", "division (mother to daughter)", "track begins"],
                  loc="outside lower center", ncols=3, frameon=False, fontsize="small")
    return figure


def _draw_movie(axis, name: str, table: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    needed = {"t", "track_id", "parent_track_id", "centroid_x", "centroid_y"}
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(f"{name}: the tracks table has no columns {missing}")
    palette = colormaps["tab20"]
    ends = {}
    for track, rows in table.sort_values("t").groupby("track_id", sort=True):
        colour = palette(int(track) % 20)
        x, y = rows["centroid_x"].to_numpy(), rows["centroid_y"].to_numpy()
        axis.plot(x, y, color=colour, linewidth=1.2)
        axis.plot(x[:1], y[:1], "o", color=colour, markersize=2.5)
        ends[int(track)] = (x[-1], y[-1])
        parent = int(rows["parent_track_id"].iloc[0])
        if parent and parent in ends:
            px, py = ends[parent]
            axis.plot([px, x[0]], [py, y[0]], "--", color=colour, linewidth=0.8)
    count = table["track_id"].nunique()
    divisions = table.loc[table["parent_track_id"] > 0, "parent_track_id"].nunique()
    times = np.unique(table["t"])
    axis.set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
             title=f"{name}: {_count(count, 'track')}, {_count(divisions, 'division')}, "
                   f"{_count(len(times), 'time point')}")
    axis.invert_yaxis()  # image rows go down, as the masks are shown


def _count(number: int, noun: str) -> str:
    """'1 track', '3 tracks'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
