"""Cells followed through a time-lapse: each time point's label mask linked to the next.

``link_frames`` takes the cell label masks of a movie's time points (what ``labsight submit
cells movie.tif --each-plane t`` gives, one job per time point) and gives every cell a track id
that it keeps while it lives, with the lineage of the Cell Tracking Challenge's ``res_track.txt``
(a track's first and last time point, and its parent's track where it began at a division).

Linking, between each time point and the next (the overlap rule of CellProfiler's TrackObjects
and of the Cell Tracking Challenge's overlap trackers):

1. cells that overlap are paired one to one by their intersection over union (IoU), the
   assignment of largest total IoU (``scipy.optimize.linear_sum_assignment``), pairs of IoU
   under ``min_iou`` left out;
2. a cell left without a partner with at least ``DIVISION_SHARE`` of its area over a cell of
   the time point before, whose partner is its sibling, is that cell's daughter: the mother's
   track ends, and both daughters begin tracks whose parent it is (daughters after mitosis lie
   either side of where their mother was, each partly over her);
3. cells still without partners are paired by their centroids' distance, up to
   ``max_distance_um`` (again the assignment of least total distance): a cell that moved
   further than its size between two time points;
4. a cell still alone begins a track (parent 0); a track whose cell has no partner ends.

There is no gap closing: a cell the segmentation misses at one time point ends its track and
begins another after. All of it is numpy and scipy on the masks; nothing here needs a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["DIVISION_SHARE", "Tracks", "link_frames"]

DIVISION_SHARE = 0.25
"""Share of a new cell's area that must lie over a cell of the time point before for it to be
that cell's daughter (its sibling being the cell the overlap pairing gave the mother). Daughter
nuclei of a generated mitosis lie about a third over their mother's nucleus; a cell that merely
touches a neighbour's footprint lies a few percent over it."""

_NO_PAIR = 1e9
"""Cost of a pair the assignment may not choose."""


@dataclass(frozen=True)
class Tracks:
    """Every cell's track through a movie.

    Attributes
    ----------
    labels : list of ndarray of int64
        Per time point, the cell labels of its mask, increasing.
    track_ids : list of ndarray of int64
        Per time point, the track id of each of ``labels`` (1, 2, ...).
    lineage : ndarray of int64, shape (K, 4)
        One row per track, by id: id, first time point, last time point, parent track id
        (0 for none): the columns of the Cell Tracking Challenge's ``res_track.txt``.
    """

    labels: list[np.ndarray]
    track_ids: list[np.ndarray]
    lineage: np.ndarray

    def relabelled(self, t: int, mask: np.ndarray) -> np.ndarray:
        """Time point ``t``'s ``mask`` with each cell's label replaced by its track id (uint16
        while the ids fit, else int32; 0 stays background)."""
        dtype = np.uint16 if len(self.lineage) < 65536 else np.int32
        lookup = np.zeros(int(mask.max(initial=0)) + 1, dtype)
        lookup[self.labels[t]] = self.track_ids[t]
        return lookup[mask]

    def divisions(self) -> int:
        """How many mothers divided (tracks with daughters)."""
        parents = self.lineage[:, 3]
        return len(np.unique(parents[parents > 0]))


def link_frames(
    frames: Sequence[np.ndarray],
    *,
    pixel_size_um: float,
    min_iou: float = 0.1,
    max_distance_um: float = 10.0,
) -> Tracks:
    """Link the cell label masks of a movie's time points into tracks.

    Parameters
    ----------
    frames : sequence of ndarray of int, each (H, W)
        One cell label mask per time point, in time order, all of one shape (0 = background;
        labels need not be contiguous or follow any order).
    pixel_size_um : float
        Side of a pixel in micrometres, for ``max_distance_um``.
    min_iou : float, optional
        Overlapping cells pair only at this intersection over union or more (0 < min_iou <= 1).
    max_distance_um : float, optional
        Cells that overlap no partner pair by centroid distance up to this (0 turns it off).

    Returns
    -------
    Tracks
        Track ids per time point's cells and the lineage (see the module's rules).

    Raises
    ------
    ValueError
        For no frames, masks that are not 2-D integer arrays of one shape, or settings out of
        range.

    Examples
    --------
    >>> first = np.zeros((20, 20), np.int32); first[2:8, 2:8] = 5
    >>> second = np.zeros_like(first); second[3:9, 3:9] = 9
    >>> tracks = link_frames([first, second], pixel_size_um=1.0)
    >>> [ids.tolist() for ids in tracks.track_ids], tracks.lineage.tolist()
    ([[1], [1]], [[1, 0, 1, 0]])
    """
    _check(frames, pixel_size_um, min_iou, max_distance_um)
    max_distance_px = max_distance_um / pixel_size_um
    labels = [np.unique(frame[frame > 0]).astype(np.int64) for frame in frames]
    lineage: list[list[int]] = []  # [id, first, last, parent]
    track_ids = [np.zeros(len(labels[0]), np.int64)]
    for i in range(len(labels[0])):
        lineage.append([len(lineage) + 1, 0, 0, 0])
        track_ids[0][i] = len(lineage)
    for t in range(1, len(frames)):
        before, now = frames[t - 1], frames[t]
        links = _links(before, now, labels[t - 1], labels[t], min_iou, max_distance_px)
        ids = np.zeros(len(labels[t]), np.int64)
        for previous, current in links.continued:
            track = int(track_ids[t - 1][previous])
            ids[current] = track
            lineage[track - 1][2] = t
        for mother, daughters in links.divided:
            parent = int(track_ids[t - 1][mother])
            for daughter in daughters:
                lineage.append([len(lineage) + 1, t, t, parent])
                ids[daughter] = len(lineage)
        for current in np.flatnonzero(ids == 0):
            lineage.append([len(lineage) + 1, t, t, 0])
            ids[current] = len(lineage)
        track_ids.append(ids)
    return Tracks(labels, track_ids, np.array(lineage, np.int64).reshape(-1, 4))


@dataclass(frozen=True)
class _Links:
    """Between two time points, by index into each one's labels: pairs that continue a track,
    and mothers with their two daughters."""

    continued: list[tuple[int, int]]
    divided: list[tuple[int, tuple[int, int]]]


def _links(before: np.ndarray, now: np.ndarray, before_labels: np.ndarray,
           now_labels: np.ndarray, min_iou: float, max_distance_px: float) -> _Links:
    """The overlap pairing, the divisions and the distance pairing of two time points."""
    n_before, n_now = len(before_labels), len(now_labels)
    if n_before == 0 or n_now == 0:
        return _Links([], [])
    index_before = _indices(before, before_labels)
    index_now = _indices(now, now_labels)
    area_before = np.bincount(index_before.ravel(), minlength=n_before + 1)[1:]
    area_now = np.bincount(index_now.ravel(), minlength=n_now + 1)[1:]
    both = (index_before > 0) & (index_now > 0)
    keys = (index_before[both].astype(np.int64) - 1) * n_now + (index_now[both] - 1)
    pair_keys, intersections = np.unique(keys, return_counts=True)
    pair_before, pair_now = np.divmod(pair_keys, n_now)
    iou = intersections / (area_before[pair_before] + area_now[pair_now] - intersections)

    usable = iou >= min_iou
    continued = dict(_assign(pair_before[usable], pair_now[usable], 1.0 - iou[usable]))
    partner_of_now = {c: r for r, c in continued.items()}

    # a cell left alone, partly over a mother that kept a partner: that partner's sibling
    divided: list[tuple[int, tuple[int, int]]] = []
    in_division: set[int] = set()
    share = intersections / area_now[pair_now]
    for k in np.argsort(-share, kind="stable"):
        if share[k] < DIVISION_SHARE:
            break
        mother, daughter = int(pair_before[k]), int(pair_now[k])
        if daughter in partner_of_now or daughter in in_division or mother not in continued:
            continue
        sibling = continued.pop(mother)
        del partner_of_now[sibling]
        divided.append((mother, (sibling, daughter)))
        in_division.update((sibling, daughter))
    mothers = {mother for mother, _ in divided}

    # what is still alone pairs by distance, where the cells moved further than their size
    lonely_before = np.array([i for i in range(n_before) if i not in continued and i not in mothers],
                             np.int64)
    lonely_now = np.array([j for j in range(n_now)
                           if j not in partner_of_now and j not in in_division], np.int64)
    if len(lonely_before) and len(lonely_now) and max_distance_px > 0:
        centres_before, centres_now = _centroids(index_before, n_before), _centroids(index_now, n_now)
        near = cKDTree(centres_before[lonely_before]).sparse_distance_matrix(
            cKDTree(centres_now[lonely_now]), max_distance_px,
            output_type="ndarray")  # keeps distances of 0
        for r, c in _assign(near["i"], near["j"], near["v"]):
            continued[int(lonely_before[r])] = int(lonely_now[c])
    return _Links(sorted(continued.items()), divided)


def _assign(rows: np.ndarray, cols: np.ndarray, costs: np.ndarray) -> list[tuple[int, int]]:
    """The one-to-one pairs of least total cost among candidate pairs (``rows[k]``,
    ``cols[k]``) of cost ``costs[k]``, as many pairs as can be made. Solved per connected group
    of candidates (cells only touch their neighbours), so a field of thousands of cells never
    builds a matrix of all of them against all."""
    if len(rows) == 0:
        return []
    row_ids, row_at = np.unique(rows, return_inverse=True)
    col_ids, col_at = np.unique(cols, return_inverse=True)
    n_rows = len(row_ids)
    nodes = n_rows + len(col_ids)
    graph = coo_matrix((np.ones(len(rows)), (row_at, n_rows + col_at)), shape=(nodes, nodes))
    _, group = connected_components(graph, directed=False)
    pairs: list[tuple[int, int]] = []
    order = np.argsort(group[row_at], kind="stable")
    starts = np.flatnonzero(np.diff(group[row_at][order], prepend=-1))
    for members in np.split(order, starts[1:]):
        local_rows, r = np.unique(row_at[members], return_inverse=True)
        local_cols, c = np.unique(col_at[members], return_inverse=True)
        cost = np.full((len(local_rows), len(local_cols)), _NO_PAIR)
        cost[r, c] = costs[members]
        chosen_rows, chosen_cols = linear_sum_assignment(cost)
        for a, b in zip(chosen_rows, chosen_cols, strict=True):
            if cost[a, b] < _NO_PAIR:
                pairs.append((int(row_ids[local_rows[a]]), int(col_ids[local_cols[b]])))
    return pairs


def _indices(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mask as 1 + the position of each pixel's label in ``labels`` (0 for background)."""
    flat = mask.ravel()
    positions = np.searchsorted(labels, flat)
    found = (flat > 0) & (labels[np.minimum(positions, len(labels) - 1)] == flat)
    return np.where(found, positions + 1, 0).reshape(mask.shape)


def _centroids(index: np.ndarray, count: int) -> np.ndarray:
    """(count, 2) mean row and column of each indexed object."""
    rows, cols = np.indices(index.shape)
    flat = index.ravel()
    area = np.maximum(np.bincount(flat, minlength=count + 1)[1:], 1)
    mean_row = np.bincount(flat, rows.ravel(), minlength=count + 1)[1:] / area
    mean_col = np.bincount(flat, cols.ravel(), minlength=count + 1)[1:] / area
    return np.column_stack([mean_row, mean_col])


def _check(frames: Sequence[np.ndarray], pixel_size_um: float, min_iou: float,
           max_distance_um: float) -> None:
    if len(frames) == 0:
        raise ValueError("frames: give at least one time point's cell labels")
    shape = frames[0].shape
    for t, frame in enumerate(frames):
        if frame.ndim != 2 or frame.dtype.kind not in "iu":
            raise ValueError(f"frames[{t}]: expected a 2-D integer label mask, got "
                             f"{frame.dtype} of shape {list(frame.shape)}")
        if frame.shape != shape:
            raise ValueError(f"frames[{t}]: shape {list(frame.shape)} differs from frames[0]'s "
                             f"{list(shape)}; a movie's time points have one size")
    if not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um: must be > 0, got {pixel_size_um}")
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou: must be in (0, 1], got {min_iou}")
    if not np.isfinite(max_distance_um) or max_distance_um < 0:
        raise ValueError(f"max_distance_um: must be >= 0, got {max_distance_um}")
