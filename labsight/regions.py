"""An image read region by region from a TIFF, for slides too large to decode whole.

:class:`RegionImage` looks like the (H, W, C) array the patch geometry of
:mod:`labsight.patches` cuts from, but reads only the tiles a crop touches
(tifffile's zarr view of the file), so a worker holds a few tiles of a
20,000² slide at a time, never the slide. An uncompressed TIFF stored as one
block (tifffile writes one strip) is read by the rows a crop spans instead:
its zarr view has a single chunk, the whole image.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import tifffile

from labsight.pixel_types import NATIVE_DTYPES

REGION_AXES = ("YX", "YXS")
"""Series axes a TIFF must have to be read by regions: one plane, grey or interleaved samples."""


class RegionImage:
    """A read-only (H, W, C) view of a TIFF series whose slices read only their region.

    Supports what cutting patches needs: ``shape``, ``ndim``, ``dtype``,
    ``itemsize``, basic slices ``[y0:y1, x0:x1]`` and open index grids
    (``image[np.ix_(rows, cols)]``), each returning an ndarray. A region whose
    pixels do not decode (a cut or corrupt file) raises ValueError.
    """

    def __init__(self, array: Any) -> None:
        self._array = array
        height, width = array.shape[:2]
        channels = array.shape[2] if len(array.shape) == 3 else 1
        self.shape = (int(height), int(width), int(channels))
        self.ndim = 3
        self.dtype = np.dtype(array.dtype)
        self.itemsize = self.dtype.itemsize

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        try:
            pixels = np.asarray(self._array[rows, cols])
        except ValueError:
            raise
        except Exception as exc:  # any decoder failure (a cut or corrupt tile) is the file's fault
            raise ValueError(f"the TIFF's pixels at rows {rows.start}-{rows.stop}, columns "
                             f"{cols.start}-{cols.stop} do not decode ({exc})") from exc
        return pixels[:, :, None] if pixels.ndim == 2 else pixels

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key[0], key[1]
        if isinstance(rows, slice) and isinstance(cols, slice):
            return self._read(rows, cols)
        # An open grid (np.ix_): read the box that holds it, then index inside it.
        row_index = np.asarray(rows).reshape(-1)
        col_index = np.asarray(cols).reshape(-1)
        top, left = int(row_index.min()), int(col_index.min())
        box = self._read(slice(top, int(row_index.max()) + 1), slice(left, int(col_index.max()) + 1))
        return box[np.ix_(row_index - top, col_index - left)]


class ContiguousPixels:
    """An (H, W[, C]) image stored uncompressed in one block of a file; slices read the rows
    they span (one read each), never the block."""

    def __init__(self, stream: IO[bytes], offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Raises ValueError if the file ends before the block does (a truncated TIFF)."""
        self._stream, self._offset, self.shape, self.dtype = stream, offset, shape, dtype
        self._row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        needed = offset + shape[0] * self._row_bytes
        size = stream.seek(0, io.SEEK_END)
        if size < needed:
            raise ValueError(
                f"the TIFF is truncated: its {'x'.join(map(str, shape))} {dtype.name} pixels end "
                f"at byte {needed:,}, the file has {size:,} bytes"
            )

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        top, bottom, _ = key[0].indices(self.shape[0])
        rows = max(0, bottom - top)
        self._stream.seek(self._offset + top * self._row_bytes)
        data = self._stream.read(rows * self._row_bytes)
        return np.frombuffer(data, self.dtype).reshape((rows, *self.shape[1:]))[:, key[1]]


def readable_by_regions(stream: IO[bytes]) -> bool:
    """Whether :func:`tiff_regions` reads the TIFF in ``stream`` as the file holds it: one plane of
    grey or interleaved uint8 or uint16 samples (other dtypes need the whole image to be mapped
    onto those, see labsight.pixel_types). Leaves the stream at its start."""
    stream.seek(0)
    try:
        with tifffile.TiffFile(stream) as tif:
            series = tif.series[0]
            return series.axes in REGION_AXES and np.dtype(series.dtype) in NATIVE_DTYPES
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: the whole-image path says why
        return False
    finally:
        stream.seek(0)


@contextmanager
def tiff_regions(stream: IO[bytes]) -> Iterator[RegionImage]:
    """The first series of the TIFF in ``stream`` as a :class:`RegionImage` (valid inside the block).

    Raises
    ------
    ValueError
        If the series is not one plane of grey or interleaved uint8 or uint16 samples
        (REGION_AXES), or its one uncompressed block ends past the end of the file.
    """
    import zarr

    with tifffile.TiffFile(stream) as tif:
        series = tif.series[0]
        if series.axes not in REGION_AXES:
            raise ValueError(
                f"a TIFF with axes {series.axes} cannot be read by regions; expected one of "
                f"{list(REGION_AXES)}"
            )
        if np.dtype(series.dtype) not in NATIVE_DTYPES:
            raise ValueError(f"a TIFF of {series.dtype} samples cannot be read by regions; expected "
                             "uint8 or uint16")
        page = series.keyframe
        if page.is_contiguous and len(series.pages) == 1:
            dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
            yield RegionImage(ContiguousPixels(stream, int(page.dataoffsets[0]), series.shape, dtype))
            return
        # level 0, the full resolution: a pyramid's store is otherwise a group of every level
        with series.aszarr(level=0, read_only=True) as store:  # uncompressed files default to writable
            yield RegionImage(zarr.open(store, mode="r"))
