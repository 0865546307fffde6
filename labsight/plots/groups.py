"""Groups in figures: read from a CSV, each drawn in its own colour and named in a legend."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.legend import Legend

Colour = tuple[float, float, float, float]

LEGEND_ROWS = 20
"""Legend entries per column; more groups get more columns, never a dropped entry."""


def read_groups(path: Path) -> dict[str, str]:
    """Ids mapped to group names from a CSV whose lines are ``id,group`` (more columns ignored).

    A header line needs no special care: it only maps its own first cell,
    which no plotted id is expected to equal.

    Raises
    ------
    ValueError
        A line with fewer than two cells, or a file that is not text.
    """
    mapping: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            for number, row in enumerate(csv.reader(stream), 1):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}: line {number}: expected id,group, got {row!r}")
                mapping[row[0].strip()] = row[1].strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text CSV file") from None
    return mapping


def groups_of(keys: Sequence[Sequence[str]], mapping: Mapping[str, str], what: str) -> list[str]:
    """The group of each item, under the first of the item's keys that ``mapping`` holds.

    Raises
    ------
    ValueError
        Naming the items (by their first key) that no key of the mapping matches.
    """
    found: list[str] = []
    missing: list[str] = []
    for item_keys in keys:
        group = next((mapping[key] for key in item_keys if key in mapping), None)
        if group is None:
            missing.append(item_keys[0])
        else:
            found.append(group)
    if missing:
        raise ValueError(f"{len(missing)} of {len(keys)} {what} have no group in the groups file, "
                         f"e.g. {missing[:3]}")
    return found


def ordered_groups(groups: Sequence[str]) -> list[str]:
    """The distinct group names in natural order (``well 2`` before ``well 10``)."""
    return sorted(set(groups), key=_natural_key)


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part.lower())
            for part in re.split(r"(\d+)", name) if part]


def group_colours(count: int) -> list[Colour]:
    """``count`` distinct colours: tab10 up to 10 groups, tab20 up to 20, then evenly along turbo."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](float(x)) for x in np.linspace(0.0, 1.0, count)]


def legend_columns(entries: int) -> int:
    """Columns of a legend of ``entries`` entries: LEGEND_ROWS entries a column."""
    return max(1, math.ceil(entries / LEGEND_ROWS))


def outside_legend(
    axes: Axes,
    handles: Sequence[Artist | tuple[Artist, ...]] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Legend:
    """A legend right of ``axes`` (so it hides no data) with every entry, LEGEND_ROWS per column."""
    if handles is None or labels is None:
        handles, labels = axes.get_legend_handles_labels()
    return axes.legend(
        handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0, fontsize="small", ncols=legend_columns(len(labels)),
    )
