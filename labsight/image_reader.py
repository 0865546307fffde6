"""Which pixels of a file an image is: axes from metadata, and the channel/plane/projection choice.

A microscope file is often more than one 2-D image: an ImageJ hyperstack
(``TZCYX``), an OME-TIFF (``CYX``), an RGB image with alpha. The axes come
from the file's metadata as tifffile reads them (ImageJ and OME axes, the
samples and planar configuration of a plain TIFF, generic pages as ``I``),
never from a guess on the shape. :func:`plan_reading` turns them and a
:class:`ReadChoices` into what will be read (checked from the header alone,
so a submission is refused before any pixel is decoded) and
:func:`read_planned` reads exactly that, as (H, W) or (H, W, C) pixels.

Axes: Y, X rows and columns; C channels and S samples (channels are C-major,
then S); every other axis (Z depth, T time, I/Q pages of unknown meaning, ...)
is a stack axis that ``plane`` must fix or ``z_project`` reduce.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from labsight.errors import InvalidArgument
from labsight.intensity import DEFAULT_INTENSITY, IntensityScaling, parse_intensity
from labsight.pixel_size import PixelSize
from labsight.pixel_types import NATIVE_DTYPES

__all__ = [
    "AXIS_NAMES",
    "Layout",
    "ReadChoices",
    "ReadPlan",
    "Z_PROJECTIONS",
    "parse_channels",
    "parse_plane",
    "parse_series",
    "parse_z_project",
    "plan_reading",
    "read_planned",
]

Z_PROJECTIONS = ("max", "mean", "sum")

AXIS_NAMES = {
    "Y": "height", "X": "width", "C": "channel", "S": "sample", "Z": "depth", "T": "time",
    "I": "page", "Q": "page", "R": "tile", "E": "lambda", "H": "lifetime", "P": "phase",
    "A": "angle", "L": "exposure", "V": "view", "M": "mosaic",
}
"""tifffile's axis codes, named for messages."""

_CHANNEL_AXES = "CS"
_UNKNOWN_STACK_AXES = "IQ"
_MAX_CHOICE_TEXT = 200
_PLANE_PART = re.compile(r"(?:([a-z])=)?(\d{1,9})")

PageReader = Callable[[Sequence[int]], np.ndarray]
"""Reads the pages at the given indices as one (n, *page shape) array."""


def parse_channels(text: str) -> tuple[int | str, ...]:
    """'0,2' (indices) or 'DAPI,GFP' (names from the file's metadata) to a tuple; '' for all."""
    if len(text) > _MAX_CHOICE_TEXT:
        raise ValueError(f"{len(text)} characters; expected a few indices like 0,2 or names")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(int(part) if part.isdigit() else part for part in parts)


def parse_plane(text: str) -> tuple[tuple[str, int], ...]:
    """'3' (the only stack axis) or 'z=3,t=0' to ((axis, index), ...); '' for none."""
    if len(text) > _MAX_CHOICE_TEXT:
        raise ValueError(f"{len(text)} characters; expected an index like 3 or z=3,t=0")
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    chosen: list[tuple[str, int]] = []
    for part in parts:
        match = _PLANE_PART.fullmatch(part)
        if match is None or (match.group(1) is None and len(parts) > 1):
            raise ValueError(f"expected an index like 3 or axis=index pairs like z=3,t=0, got {text!r}")
        chosen.append(((match.group(1) or "").upper(), int(match.group(2))))
    axes = [axis for axis, _ in chosen]
    if len(set(axes)) != len(axes):
        raise ValueError(f"an axis is chosen twice in {text!r}")
    return tuple(chosen)


def parse_z_project(text: str) -> str:
    """'max', 'mean', 'sum' or '' (no projection); ValueError otherwise."""
    cleaned = text.strip().lower()
    if cleaned and cleaned not in Z_PROJECTIONS:
        raise ValueError(f"expected one of {', '.join(Z_PROJECTIONS)} (or empty), got {text[:100]!r}")
    return cleaned


def parse_series(text: str) -> int | None:
    """'3' (an image of a file holding several) to 3; '' to None (the first); ValueError otherwise."""
    cleaned = text.strip()
    if not cleaned:
        return None
    if not cleaned.isdigit() or len(cleaned) > 9:
        raise ValueError(f"expected the index of an image in the file, like 0 or 3, got {text[:100]!r}")
    return int(cleaned)


@dataclass(frozen=True)
class ReadChoices:
    """How to read an image: which image of the file, channels, a plane or a z projection, and the
    intensity scaling."""

    channels: tuple[int | str, ...] = ()
    plane: tuple[tuple[str, int], ...] = ()
    z_project: str = ""
    intensity: IntensityScaling = field(default_factory=lambda: parse_intensity(DEFAULT_INTENSITY))
    series: int | None = None

    @classmethod
    def parse(cls, channels: str = "", plane: str = "", z_project: str = "",
              intensity: str = "", series: str = "") -> ReadChoices:
        """Parse the five texts (job parameters or an Image's ``read`` options); ValueError if bad."""
        return cls(parse_channels(channels), parse_plane(plane), parse_z_project(z_project),
                   parse_intensity(intensity), parse_series(series))


@dataclass(frozen=True)
class Layout:
    """What an image file holds, from its header.

    Attributes
    ----------
    axes : str
        tifffile axis codes of the whole image, e.g. ``ZCYX``, ``YXS``, ``YX``
        (axes of length 1 dropped).
    shape : tuple of int
        Length of each axis.
    dtype : numpy.dtype
        Sample type.
    page_axes : str
        The trailing axes one page holds (read at once); the leading ones index pages.
    chunk_bytes : int
        The largest piece decoded at once within a page (a TIFF strip or tile).
    channel_names : tuple of str
        Names of the C axis's channels where the metadata has them.
    alpha : bool
        The last sample is alpha (TIFF ExtraSamples, a PNG with alpha).
    significant_bits : int or None
        Bits per sample the file declares (OME SignificantBits, TIFF BitsPerSample).
    other_images : int
        Further images in the file (OME positions, separately written TIFF series)
        that are not read: only the one ``ReadChoices.series`` chose (the first by default) is.
    pixel_size : PixelSize or None
        The physical pixel size the file states (:mod:`labsight.pixel_size`), if any.
    exif_orientation : int
        A PNG's or JPEG's EXIF orientation (1 upright); ``shape`` is that of the pixels
        turned upright, as they are read.
    """

    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    page_axes: str
    chunk_bytes: int = 0
    channel_names: tuple[str, ...] = ()
    alpha: bool = False
    significant_bits: int | None = None
    other_images: int = 0
    pixel_size: PixelSize | None = None
    exif_orientation: int = 1

    def describe(self) -> str:
        """'ZCYX [Z=5, C=2, Y=64, X=64]' for messages."""
        sizes = ", ".join(f"{axis}={size}" for axis, size in zip(self.axes, self.shape, strict=True))
        return f"{self.axes} [{sizes}]"

    def size(self, axis: str) -> int:
        """Length of ``axis`` (1 when the image has no such axis)."""
        return self.shape[self.axes.index(axis)] if axis in self.axes else 1


@dataclass(frozen=True)
class ReadPlan:
    """What :func:`read_planned` will read and give.

    Attributes
    ----------
    shape : tuple of int
        (H, W) or (H, W, C) of the pixels it gives.
    dtype : numpy.dtype
        Their dtype: the file's, but uint16 for a ``sum`` projection of uint8 or
        uint16 and float64 for a ``mean`` or ``sum`` of other dtypes (which
        :mod:`labsight.pixel_types` maps onto uint16 after).
    decode_bytes : int
        The most memory reading takes at once: the pages read together, a
        projection's accumulator, the largest strip or tile.
    fixed : dict of str to int
        Stack axes fixed by ``plane``.
    project_axis : str
        The axis ``z_project`` reduces ('' for none).
    projection : str
        ``max``, ``mean``, ``sum`` or ''.
    channels : tuple of int or None
        Indices into the image's channels (C-major, then S); None for all.
    drop_alpha : bool
        The last channel is alpha and is dropped after checking it is opaque.
    choices_field : str
        How messages name the choices.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    decode_bytes: int
    fixed: dict[str, int]
    project_axis: str
    projection: str
    channels: tuple[int, ...] | None
    drop_alpha: bool
    choices_field: str = "read"


def plan_reading(
    layout: Layout, choices: ReadChoices, field: str, choices_field: str = ""
) -> ReadPlan:
    """Check ``choices`` against ``layout`` and say what will be read.

    Messages name ``field`` and the choices as ``choices_field``.channels etc.
    (default ``field``.read: the Image's read options; the gateway says params).

    Raises
    ------
    InvalidArgument
        A page with axes other than Y, X and S; a stack left without a plane or
        projection (the message lists the axes and the parameters that choose);
        a plane, projection or channel the image does not have.
    """
    if set(layout.page_axes) - set("YXS") or not {"Y", "X"} <= set(layout.page_axes):
        raise InvalidArgument(
            f"{field}: TIFF page with axes {layout.page_axes} of {layout.describe()}; expected a "
            "2-D image (Y, X and samples) per page"
        )
    where = choices_field or f"{field}.read"
    stack_axes = [axis for axis in layout.axes if axis not in "YX" + _CHANNEL_AXES]
    fixed = _fixed_axes(layout, stack_axes, choices.plane, field, where)
    project_axis = _projected_axis(layout, stack_axes, fixed, choices.z_project, field, where)
    left = [axis for axis in stack_axes if axis not in fixed and axis != project_axis]
    if left:
        raise InvalidArgument(
            f"{field}: a stack with axes {layout.describe()} "
            f"({', '.join(f'{a} {AXIS_NAMES.get(a, a)}' for a in layout.axes if a not in 'YX')}); "
            f"choose one plane with {where}.plane (e.g. {_plane_example(left)!r}) or project "
            f"with {where}.z_project=max|mean|sum"
            + (f", and channels with {where}.channels (e.g. channels=0,2)" if "C" in layout.axes else "")
        )
    total_channels = layout.size("C") * layout.size("S")
    channels = _channel_indices(layout, choices.channels, total_channels, field, where)
    drop_alpha = layout.alpha and channels is None and total_channels > 1
    out_channels = len(channels) if channels is not None else total_channels - int(drop_alpha)
    height, width = layout.size("Y"), layout.size("X")
    shape = (height, width) if out_channels == 1 else (height, width, out_channels)
    dtype = _projected_dtype(layout.dtype, choices.z_project)
    page_bytes = math.prod(layout.shape[len(layout.axes) - len(layout.page_axes):]) * layout.dtype.itemsize
    pages_at_once = len(_needed_c(layout, channels))  # one page per channel of a plane
    accumulator = height * width * out_channels * 8 if project_axis else 0
    return ReadPlan(
        shape=shape,
        dtype=dtype,
        decode_bytes=max(pages_at_once * page_bytes, layout.chunk_bytes) + accumulator,
        fixed=fixed,
        project_axis=project_axis,
        projection=choices.z_project,
        channels=channels,
        drop_alpha=drop_alpha,
        choices_field=where,
    )


def _projected_dtype(dtype: np.dtype, projection: str) -> np.dtype:
    """The dtype of a plane, or of a projection of planes, of pixels of ``dtype``."""
    if projection not in ("mean", "sum"):
        return dtype
    if dtype in NATIVE_DTYPES:
        return np.dtype(np.uint16) if projection == "sum" else dtype
    return np.dtype(np.float64)


def read_planned(layout: Layout, plan: ReadPlan, read_pages: PageReader, field: str) -> np.ndarray:
    """Read what ``plan`` says through ``read_pages``, as (H, W) or (H, W, C) pixels.

    Raises InvalidArgument when an alpha channel to drop is not fully opaque.
    """
    leading = layout.axes[: len(layout.axes) - len(layout.page_axes)]
    leading_shape = layout.shape[: len(leading)]
    needed_c = _needed_c(layout, plan.channels)
    steps = range(layout.size(plan.project_axis)) if plan.project_axis else [0]
    accumulated: np.ndarray | None = None
    for step in steps:
        index = dict(plan.fixed)
        if plan.project_axis:
            index[plan.project_axis] = step
        pages = [
            int(np.ravel_multi_index(
                [c if axis == "C" else index[axis] for axis in leading], leading_shape
            )) if leading else 0
            for c in (needed_c if "C" in leading else [0])
        ]
        block = read_pages(pages)  # (n pages, *page axes)
        pixels = _channels_last(block, layout, needed_c if "C" in leading else None, plan, field)
        if accumulated is None:
            accumulated = (pixels.astype(np.uint64 if plan.dtype.kind == "u" else np.float64)
                           if plan.projection in ("mean", "sum") else pixels)
        elif plan.projection == "max":
            np.maximum(accumulated, pixels, out=accumulated)
        else:
            accumulated += pixels
    assert accumulated is not None  # every layout has at least one step
    if plan.projection == "mean" and accumulated.dtype.kind == "f":
        accumulated /= len(steps)
    elif plan.projection == "mean":
        count = len(steps)
        accumulated = (accumulated * 2 + count) // (2 * count)  # rounded half up
    elif plan.projection == "sum" and accumulated.dtype.kind != "f":
        accumulated = np.minimum(accumulated, np.iinfo(np.uint16).max)
    return np.ascontiguousarray(accumulated.astype(plan.dtype, copy=False))


def _channels_last(
    block: np.ndarray, layout: Layout, page_c: list[int] | None, plan: ReadPlan, field: str
) -> np.ndarray:
    """Pages of one plane as (H, W[, C]) with the planned channels, samples last."""
    page_axes = layout.page_axes
    pages = block.reshape((block.shape[0], *block.shape[-len(page_axes):]))
    if "S" in page_axes:
        pages = np.moveaxis(pages, 1 + page_axes.index("S"), -1)
    else:
        pages = pages[..., np.newaxis]
    # (n C pages, Y, X, S) -> (Y, X, n * S): channel k = c * S + s, as _channel_indices counts.
    samples = pages.shape[-1]
    stacked = np.moveaxis(pages, 0, 2).reshape(pages.shape[1], pages.shape[2], -1)
    if plan.drop_alpha:
        where = plan.choices_field
        alpha = stacked[..., -1]
        opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "iu" else 1  # float and 1-bit: 1
        transparent = int(np.count_nonzero(alpha != opaque))
        if transparent:
            raise InvalidArgument(
                f"{field}: the alpha channel is not opaque ({transparent} of {alpha.size} pixels "
                "are transparent); LabSight does not blend: flatten the image onto a background, "
                f"or keep the colour channels with {where}.channels (e.g. channels=0,1,2)"
            )
        stacked = stacked[..., :-1]
    elif plan.channels is not None:
        positions = {c: i for i, c in enumerate(page_c)} if page_c is not None else {0: 0}
        stacked = stacked[..., [positions[k // samples] * samples + k % samples for k in plan.channels]]
    return stacked[..., 0] if stacked.shape[-1] == 1 else stacked


def _needed_c(layout: Layout, channels: tuple[int, ...] | None) -> list[int]:
    """Indices of the C axis that hold the planned channels."""
    samples = layout.size("S")
    if channels is None:
        return list(range(layout.size("C")))
    return sorted({k // samples for k in channels})


def _fixed_axes(
    layout: Layout, stack_axes: list[str], plane: tuple[tuple[str, int], ...], field: str,
    where: str,
) -> dict[str, int]:
    fixed: dict[str, int] = {}
    for axis, index in plane:
        if not axis:
            if len(stack_axes) != 1:
                raise InvalidArgument(
                    f"{where}.plane: {field} has {len(stack_axes) or 'no'} stack axes "
                    f"({layout.describe()}); "
                    + (f"name them, e.g. {_plane_example(stack_axes)!r}" if stack_axes else
                       "there is no plane to choose")
                )
            axis = stack_axes[0]
        if axis not in stack_axes:
            raise InvalidArgument(
                f"{where}.plane: {field} has no stack axis {axis} (axes {layout.describe()}"
                + (f"; stack axes: {''.join(stack_axes)})" if stack_axes else "; no stack axes)")
            )
        if index >= layout.size(axis):
            raise InvalidArgument(
                f"{where}.plane: {axis}={index} is beyond {field}'s {layout.size(axis)} "
                f"{AXIS_NAMES.get(axis, axis)} planes (0-{layout.size(axis) - 1})"
            )
        fixed[axis] = index
    return fixed


def _projected_axis(
    layout: Layout, stack_axes: list[str], fixed: dict[str, int], projection: str, field: str,
    where: str,
) -> str:
    """The axis a projection reduces: Z, or the only stack axis of unknown meaning (pages)."""
    if not projection:
        return ""
    free = [axis for axis in stack_axes if axis not in fixed]
    if "Z" in free:
        return "Z"
    unknown = [axis for axis in free if axis in _UNKNOWN_STACK_AXES]
    if "Z" not in stack_axes and len(unknown) == 1:
        return unknown[0]
    raise InvalidArgument(
        f"{where}.z_project: {field} has no z axis to project"
        + (f" ({where}.plane fixes it)" if "Z" in fixed else f" (axes {layout.describe()})")
    )


def _channel_indices(
    layout: Layout, chosen: tuple[int | str, ...], total: int, field: str, where: str
) -> tuple[int, ...] | None:
    if not chosen:
        return None
    samples = layout.size("S")
    indices = []
    for item in chosen:
        if isinstance(item, int):
            if item >= total:
                raise InvalidArgument(
                    f"{where}.channels: channel {item} is beyond {field}'s {total} channel(s) "
                    f"(0-{total - 1}; axes {layout.describe()})"
                )
            indices.append(item)
        elif item in layout.channel_names:
            indices.append(layout.channel_names.index(item) * samples)
        else:
            named = f"names: {list(layout.channel_names)}" if layout.channel_names else "no channel names"
            raise InvalidArgument(
                f"{where}.channels: no channel named {item[:100]!r} in {field} ({named}; "
                f"or give indices 0-{total - 1})"
            )
    return tuple(indices)


def _plane_example(axes: list[str]) -> str:
    return ",".join(f"{axis.lower()}=0" for axis in axes) if len(axes) > 1 else "0"
