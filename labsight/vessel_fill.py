"""Fill levels of a vessel: the share of its height each content phase fills.

Shared by the segmentation service (its default method and the evaluation of
generated vessels) and the gateway (the ``vessel-content`` pipeline's table), so
both measure a phase the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_levels"]


def fill_levels(instance_masks: np.ndarray, vessel_mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The share of the vessel's height each instance fills, and that of all of them together.

    The vessel's height is the number of image rows it spans. A row counts for
    an instance when the instance covers more than half of the vessel's pixels
    in that row, so a meniscus or a glare streak moves a level by at most its
    own height, and a tilted vessel is measured along the vertical, as a level
    is read.

    Parameters
    ----------
    instance_masks : numpy.ndarray
        (K, H, W) masks, non-zero inside each instance (K may be 0).
    vessel_mask : numpy.ndarray
        (H, W) mask, non-zero inside the vessel.

    Returns
    -------
    levels : numpy.ndarray
        (K,) float64 shares in [0, 1], one per instance.
    filled : float
        Share of the vessel's height covered by the instances together.

    Examples
    --------
    >>> vessel = np.zeros((10, 4), np.uint8); vessel[0:10, 1:3] = 1
    >>> liquid = np.zeros((1, 10, 4), np.uint8); liquid[0, 6:10, 1:3] = 1
    >>> fill_levels(liquid, vessel)
    (array([0.4]), 0.4)
    """
    vessel = vessel_mask > 0
    width = vessel.sum(axis=1)
    rows = width > 0
    height = int(rows.sum())
    if height == 0 or len(instance_masks) == 0:
        return np.zeros(len(instance_masks)), 0.0
    inside = (instance_masks > 0) & vessel
    covered = inside.sum(axis=2)
    levels = (covered[:, rows] * 2 > width[rows]).sum(axis=1) / height
    union = inside.any(axis=0).sum(axis=1)
    filled = float((union[rows] * 2 > width[rows]).sum() / height)
    return levels.astype(np.float64), filled
