"""A scale bar in micrometres on a panel drawn in image pixels, as microscopy figures carry."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

BAR_SHARE = 0.2
"""The bar spans about this share of the image's width (the longest round length that fits)."""

_ROUND_STEPS = (1.0, 2.0, 5.0)
"""Bar lengths are one of these times a power of ten micrometres."""


def bar_length_um(width_px: int, pixel_size_um: float) -> float:
    """The longest length of 1, 2 or 5 times a power of ten micrometres that spans at most
    :data:`BAR_SHARE` of an image ``width_px`` pixels wide at ``pixel_size_um``."""
    most = BAR_SHARE * width_px * pixel_size_um
    power = 10.0 ** math.floor(math.log10(most))
    return max((step * power for step in _ROUND_STEPS if step * power <= most), default=power)


def bar_label(length_um: float) -> str:
    """'20 µm', '500 nm' or '1.5 mm'."""
    if length_um < 1:
        return f"{length_um * 1000:g} nm"
    if length_um >= 1000:
        return f"{length_um / 1000:g} mm"
    return f"{length_um:g} µm"


def add_scale_bar(axes: Axes, width_px: int, pixel_size_um: float) -> str:
    """Draw a white scale bar with its length in the lower right of ``axes``, whose data
    coordinates are image pixels of an image ``width_px`` wide; returns its label."""
    length = bar_length_um(width_px, pixel_size_um)
    label = bar_label(length)
    bar = AnchoredSizeBar(axes.transData, length / pixel_size_um, label, "lower right",
                          pad=0.4, color="white", frameon=False, size_vertical=max(1, width_px // 200),
                          label_top=True)
    axes.add_artist(bar)
    return label
