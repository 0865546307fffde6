"""Torch kernel of percolation: cluster statistics per box side of a batch of centres' entry maps.

A centre's cells that count in some box become nodes, and 4-neighbour pairs of nodes edges that
join at the larger of their two entry indices. Side by side, in increasing order, the edges of each
side are hooked into a min-label forest (every label a root after full path compression); the
clusters of that side are then the nodes' labels, read with a few whole-batch reductions. The work
follows the cells that count, not the boxes' area, and runs as a few hundred tensor operations per
batch, which suits a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NODE_BYTES", "level_sums"]

NODE_BYTES = 160
"""Device bytes :func:`level_sums` holds per node (cell that counts) at most: ids, levels, edges, sorts."""


def level_sums(entry: Any, fits: Any, min_mass: np.ndarray) -> Any:
    """Per box side j: total cluster count, total largest-cluster size and number of percolating boxes.

    Parameters
    ----------
    entry : tensor of int16, shape (B, S, S)
        For each of B centres, the entry index of each cell of its largest box (S = the largest
        side): the first box side whose box holds the cell and whose threshold it passes; cells that
        never count hold ``len(min_mass)`` or more.
    fits : tensor of int64, shape (B,)
        Number of box sides whose box fits in the image around each centre; only those sides'
        statistics are counted for it (none for 0).
    min_mass : ndarray of int64, shape (n,)
        Per side, the smallest mass that percolates.

    Returns
    -------
    tensor of int64, shape (3, n)
    """
    import torch

    device = entry.device
    batch, span, _ = entry.shape
    n = len(min_mass)
    sums = torch.zeros((3, n), dtype=torch.int64, device=device)
    # Cells outside a centre's largest fitting box have entry indices of sides that do not fit.
    active = entry < fits.view(batch, 1, 1)
    ids = torch.cumsum(active.view(-1), 0, dtype=torch.int32) - 1
    grid = ids.view(batch, span, span)
    cells = active.view(-1).nonzero().squeeze(1)
    node_level = entry.reshape(-1)[cells].long()
    node_centre = torch.div(cells, span * span, rounding_mode="floor")
    across = active[:, :, :-1] & active[:, :, 1:]
    down = active[:, :-1, :] & active[:, 1:, :]
    heads = torch.cat([grid[:, :, :-1][across], grid[:, :-1, :][down]]).long()
    tails = torch.cat([grid[:, :, 1:][across], grid[:, 1:, :][down]]).long()
    edge_level = torch.cat([
        torch.maximum(entry[:, :, :-1], entry[:, :, 1:])[across],
        torch.maximum(entry[:, :-1, :], entry[:, 1:, :])[down],
    ]).long()
    del active, ids, grid, across, down, cells
    # Nodes and edges in order of level: the nodes of sides up to j are then a prefix.
    node_level, order = torch.sort(node_level, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)
    node_centre = node_centre[order]
    node_fits = fits[node_centre]
    edge_level, edge_order = torch.sort(edge_level, stable=True)
    heads, tails = rank[heads[edge_order]], rank[tails[edge_order]]
    del order, rank, edge_order
    steps = torch.arange(n, device=device)
    node_ends = torch.searchsorted(node_level, steps, right=True).tolist()
    edge_ends = torch.searchsorted(edge_level, steps, right=True).tolist()
    label = torch.arange(len(node_level), device=device)
    for j in range(n):
        nodes = node_ends[j]
        if nodes == 0:
            continue
        _hook(label[:nodes], heads[edge_ends[j - 1] if j else 0 : edge_ends[j]],
              tails[edge_ends[j - 1] if j else 0 : edge_ends[j]])
        labels = label[:nodes]
        roots = labels == torch.arange(nodes, device=device)
        live = node_fits[:nodes] > j
        sums[0, j] = (roots & live).sum()
        sizes = torch.bincount(labels, minlength=nodes)
        best = torch.zeros(batch, dtype=torch.int64, device=device)
        best.scatter_reduce_(0, node_centre[:nodes][roots], sizes[roots], reduce="amax")
        fitting = fits > j
        sums[1, j] = best[fitting].sum()
        mass = torch.bincount(node_centre[:nodes], minlength=batch)
        sums[2, j] = ((mass >= int(min_mass[j])) & fitting).sum()
    return sums


def _hook(label: Any, heads: Any, tails: Any) -> None:
    """Merge the sets of each edge's ends in ``label`` (a fully compressed min-label forest), in place.

    Each round hooks the larger root of every edge whose ends disagree onto the smaller one, then
    compresses paths fully, until every edge joins equal labels.
    """
    import torch

    while len(heads):
        a, b = label[heads], label[tails]
        differ = a != b
        if not bool(differ.any()):
            return
        a, b = a[differ], b[differ]
        heads, tails = heads[differ], tails[differ]
        label.scatter_reduce_(0, torch.maximum(a, b), torch.minimum(a, b), reduce="amin")
        while True:
            jumped = label[label]
            if torch.equal(jumped, label):
                break
            label.copy_(jumped)
