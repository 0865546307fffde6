"""Image inputs: reading labsight.v1.Image (tensor or PNG/TIFF/JPEG bytes) as every pipeline does."""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, TypeVar
from xml.etree import ElementTree

import numpy as np
import tifffile
from PIL import ExifTags, ImageMode
from PIL import Image as PILImage

from labsight.blobs import blob_store, check_reference, opened_blob
from labsight.buffer_file import BufferFile
from labsight.config import env_int
from labsight.errors import InvalidArgument, echo

# Re-exported: callers build image messages from here as before the light client split.
from labsight.image_messages import FORMAT_ALIASES, detect_format
from labsight.image_messages import image_from_array as image_from_array
from labsight.image_messages import image_from_file as image_from_file
from labsight.image_reader import (
    Layout,
    PageReader,
    ReadChoices,
    ReadPlan,
    plan_reading,
    read_planned,
)
from labsight.image_series import image_count
from labsight.intensity import ScaledPixels, low_range_warning, scale_intensity
from labsight.pixel_size import PixelSize, tiff_pixel_size
from labsight.pixel_types import (
    CONVERTED_DTYPES,
    NATIVE_DTYPES,
    ConvertedPixels,
    check_scaling,
    conversion_bytes,
    delivered_dtype,
    readable_dtype,
    to_native,
)
from labsight.tensor_wire import resolve_detached
from labsight.tensors import from_tensor, numpy_dtype
from labsight.tiff_damage import watch_tiff_damage
from labsight.v1 import tensor_pb2

DEFAULT_MAX_IMAGE_BYTES = 128 * 1024 * 1024
"""Largest decoded image (height x width x channels x bytes per sample) accepted by default:
an 8-bit RGB image of 6688 x 6688 pixels, or a 16-bit grey one of 8192 x 8192."""

MAX_IMAGE_BYTES_ENV = "LABSIGHT_MAX_IMAGE_BYTES"
DEFAULT_MAX_BLOB_IMAGE_BYTES = 4 * 1024**3
"""Decoded-size limit of an image in the blob store: read by regions, never decoded whole."""
MAX_BLOB_IMAGE_BYTES_ENV = "LABSIGHT_MAX_BLOB_IMAGE_BYTES"

DEFAULT_MAX_TIFF_PAGES = 10_000
"""Most pages a TIFF may have by default (e.g. 100 time points x 30 planes x 3 channels); finding
a file's series takes about 25 µs and 0.5 KB per page."""

MAX_TIFF_PAGES_ENV = "LABSIGHT_MAX_TIFF_PAGES"

MAX_CHANNELS = 8


MASK_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64))
"""Label mask dtypes (those a Tensor carries): int32 is what scikit-image and StarDist write."""

_CONVERTED_MODES = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "1": "RGB"}
"""Pillow modes that are converted after decoding, and what they become."""

_ALPHA_MODES = ("RGBA", "LA")
"""Pillow modes whose last band is alpha (dropped when opaque)."""

_EXIF_TURNS = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT, 3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM, 5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270, 7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}
"""EXIF orientations other than upright (1) and the turn that shows the pixels as viewers and
annotation tools do (as Pillow's ImageOps.exif_transpose turns them); 5-8 swap width and height."""

# The decoded-size limit here replaces Pillow's pixel-count guard, which would warn about,
# or refuse with a misleading message, images an operator has allowed.
PILImage.MAX_IMAGE_PIXELS = None

T = TypeVar("T")


def max_tiff_pages() -> int:
    """Most pages (IFDs) a TIFF may have: $LABSIGHT_MAX_TIFF_PAGES or the default."""
    return env_int(MAX_TIFF_PAGES_ENV, DEFAULT_MAX_TIFF_PAGES)


def max_image_bytes() -> int:
    """The decoded-size limit of one image: $LABSIGHT_MAX_IMAGE_BYTES or the default."""
    return env_int(MAX_IMAGE_BYTES_ENV, DEFAULT_MAX_IMAGE_BYTES)


def max_blob_image_bytes() -> int:
    """The decoded-size limit of an image in the blob store: $LABSIGHT_MAX_BLOB_IMAGE_BYTES or 4 GiB."""
    return env_int(MAX_BLOB_IMAGE_BYTES_ENV, DEFAULT_MAX_BLOB_IMAGE_BYTES)


def _default_limit(image: tensor_pb2.Image) -> int:
    """The decoded-size limit of ``image`` when the caller names none (larger for a blob)."""
    return max_blob_image_bytes() if image.WhichOneof("source") == "blob" else max_image_bytes()


@dataclass(frozen=True)
class ImageInfo:
    """What decoding an image gives, known from its header (or tensor) before any pixel is read.

    Attributes
    ----------
    shape : tuple of int
        (H, W) or (H, W, C) of the decoded pixels.
    dtype : numpy.dtype
        Their dtype.
    decode_bytes : int
        The most memory decoding takes at once: the decoded pixels, or a larger
        intermediate (a TIFF tile bigger than the image, a mode before conversion).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    decode_bytes: int

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return self.shape[1]

    @property
    def channels(self) -> int:
        """Samples per pixel (1 for an (H, W) image)."""
        return self.shape[2] if len(self.shape) == 3 else 1


def image_info(
    image: tensor_pb2.Image, field: str = "image", max_bytes: int | None = None,
    choices_field: str = "",
) -> ImageInfo:
    """Shape and dtype of an Image message as read with its ``read`` options, from its header.

    No pixel is decoded: the axes come from the file's metadata, and the
    channel, plane and projection choices of ``image.read`` are checked
    against them (:mod:`labsight.image_reader`). The checks of
    :func:`decode_image` all happen here, so a request can be validated at the
    cost of its header.

    Raises
    ------
    InvalidArgument
        Missing or empty image, unknown format, a header that does not parse,
        a stack without a chosen plane or projection, choices the image does not
        have, or pixels :func:`decode_image` would refuse: over ``max_bytes``
        decoded (default :func:`max_image_bytes`), another dtype, more than 8 channels.
        Messages name the read options as ``choices_field``.channels etc.
        (default ``field``.read; the gateway says params).
    """
    limit = _default_limit(image) if max_bytes is None else max_bytes
    series = read_choices(image, field).series
    with _opened(image, field, limit, series, _series_field(field, choices_field)) as source:
        plan = _plan(source, image, field, choices_field)
        return check_info(_delivered_info(plan), field, limit, _limit_env(image, max_bytes))


def stated_pixel_size(image: tensor_pb2.Image, field: str = "image") -> PixelSize | None:
    """The physical pixel size an image file states (:mod:`labsight.pixel_size`), from its header;
    None for pixels sent as a tensor, or a file that states none. Raises InvalidArgument as
    :func:`image_info` for a file that cannot be opened."""
    if image.WhichOneof("source") not in ("encoded", "blob"):
        return None
    series = read_choices(image, field).series
    with _opened(image, field, _default_limit(image), series, _series_field(field, "")) as source:
        return source.layout.pixel_size


def file_layouts(image: tensor_pb2.Image, field: str = "image") -> list[Layout]:
    """What each image of a file holds (its TIFF series, first to last; one for a PNG, JPEG or
    tensor), from its header: axes, sizes, dtype, channel names, bits, pixel size. Raises
    InvalidArgument as :func:`image_info` for a file that cannot be opened."""
    limit = _default_limit(image)
    with _opened(image, field, limit) as source:
        layouts = [source.layout]
    for index in range(1, layouts[0].other_images + 1):
        with _opened(image, field, limit, index) as source:
            layouts.append(source.layout)
    return layouts


def series_layout(image: tensor_pb2.Image, field: str, series_text: str) -> Layout:
    """What the file's image that ``series_text`` chooses holds (its first for empty; the last
    where the text points past them), from its header: see :func:`file_layouts`."""
    layouts = file_layouts(image, field)
    series = int(series_text) if series_text.strip().isdigit() else 0
    return layouts[min(series, len(layouts) - 1)]


def _limit_env(image: tensor_pb2.Image, max_bytes: int | None) -> str:
    """The environment variable that raises the limit an image is checked against."""
    blob = max_bytes is None and image.WhichOneof("source") == "blob"
    return MAX_BLOB_IMAGE_BYTES_ENV if blob else MAX_IMAGE_BYTES_ENV


def check_info(
    info: ImageInfo, field: str, max_bytes: int, limit_env: str = MAX_IMAGE_BYTES_ENV
) -> ImageInfo:
    """Refuse an image whose rank, channels, dtype or decoded size is not accepted; returns ``info``.

    An image over ``max_bytes`` decoded is refused naming ``limit_env``, the variable that raises it.
    """
    if len(info.shape) not in (2, 3):
        raise InvalidArgument(f"{field}: expected (H, W) or (H, W, C) pixels, got shape {list(info.shape)}")
    if info.height == 0 or info.width == 0:
        raise InvalidArgument(f"{field}: image is empty ({info.height}x{info.width} pixels)")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise InvalidArgument(
            f"{field}: {info.channels} channels; expected 1 to {MAX_CHANNELS} (choose some with "
            "the channels parameter, e.g. channels=0,2)"
        )
    if info.dtype not in NATIVE_DTYPES:
        raise InvalidArgument(f"{field}: dtype {info.dtype} not supported; expected uint8 or uint16")
    if info.decode_bytes > max_bytes:
        raise InvalidArgument(
            f"{field}: image of {info.height}x{info.width} pixels with {info.channels} channel(s) of "
            f"{info.dtype} takes {info.decode_bytes} bytes decoded, over the limit of {max_bytes} "
            f"bytes (raise {limit_env} to accept it)"
        )
    return info


def decode_image(
    image: tensor_pb2.Image, field: str = "image", max_bytes: int | None = None
) -> np.ndarray:
    """Pixels of an Image message, (H, W) or (H, W, C) uint8 or uint16, read with its ``read`` options.

    The header is checked first (:func:`image_info`), so an image over the
    limit is refused before any of its pixels is decoded. The pixels are the
    chosen channels of the chosen plane (or projection), an opaque alpha
    channel dropped, intensities scaled (:func:`labsight.intensity.scale_intensity`).

    Raises
    ------
    InvalidArgument
        As :func:`image_info`, bytes that do not decode, or an alpha channel
        that is not opaque.
    """
    return read_image(image, field, max_bytes, warn=False).pixels


@dataclass(frozen=True)
class ImageReading:
    """Pixels as every pipeline reads them, and what the reading did.

    Attributes
    ----------
    pixels : ndarray
        (H, W) or (H, W, C) uint8 or uint16.
    warnings : list of str
        What a result computed on them should carry (data using a small part of
        its range, clipped values).
    provenance : dict of str to str
        The reading's choices and the intensity range used, for JobResult.provenance.
    pixel_size : PixelSize or None
        The physical pixel size the file states (:mod:`labsight.pixel_size`), if any.
    """

    pixels: np.ndarray
    warnings: list[str]
    provenance: dict[str, str]
    pixel_size: PixelSize | None = None


def read_image(
    image: tensor_pb2.Image, field: str = "image", max_bytes: int | None = None,
    choices_field: str = "", *, warn: bool = True,
) -> ImageReading:
    """:func:`decode_image` with the warnings and provenance of the reading (messages name the
    read options as ``choices_field``, as :func:`image_info`). Without ``max_bytes`` the limit
    is larger for a blob-store image (LABSIGHT_MAX_BLOB_IMAGE_BYTES). With ``warn=False`` the
    warnings are not looked for (``warnings`` is empty) and the pixels are not scanned for their
    range: for callers that would drop them (the model services: the worker reads each job's
    image with its warnings for the result)."""
    limit = _default_limit(image) if max_bytes is None else max_bytes
    choices = read_choices(image, field)
    with _opened(image, field, limit, choices.series, _series_field(field, choices_field)) as source:
        plan = _plan(source, image, field, choices_field)
        check_info(_delivered_info(plan), field, limit)
        pixels = _guarded(source.fmt, source.data_field, lambda: read_planned(
            source.layout, plan, source.read_pages, field))
    if pixels.shape != plan.shape or pixels.dtype != plan.dtype:
        # The header promised something else: never hand on what was not checked.
        raise InvalidArgument(
            f"{source.data_field}.data: corrupt {source.fmt.upper()} image (header says "
            f"{list(plan.shape)} {plan.dtype}, decoded {list(pixels.shape)} {pixels.dtype})"
        )
    bits = source.layout.significant_bits
    informative_bits = bits if bits is not None and bits < pixels.dtype.itemsize * 8 else None
    converted: ConvertedPixels | None = None
    try:
        if pixels.dtype in NATIVE_DTYPES:
            scaled = scale_intensity(pixels, choices.intensity, informative_bits)
        else:
            converted = to_native(pixels, choices.intensity, informative_bits)
            scaled = converted.scaled
    except ValueError as error:
        raise InvalidArgument(f"{choices_field or field + '.read'}.intensity: {error}") from None
    warnings = _reading_warnings(field, source.layout, choices, scaled, converted) if warn else []
    provenance = {
        "intensity": choices.intensity.text,
        "intensity_range": f"{scaled.black:g}-{scaled.white:g}",
        "image_axes": source.layout.describe(),
    }
    if source.layout.dtype not in NATIVE_DTYPES:
        provenance["source_dtype"] = str(source.layout.dtype)
    if source.layout.pixel_size is not None:
        provenance["image_pixel_size"] = source.layout.pixel_size.describe()
    if source.layout.exif_orientation != 1:
        provenance["exif_orientation"] = (f"{source.layout.exif_orientation}: pixels turned "
                                          "upright, as viewers show them")
    provenance.update({name: text for name, text in _read_texts(image).items()
                       if text and name != "intensity"})
    return ImageReading(scaled.pixels, warnings, provenance, source.layout.pixel_size)


def _reading_warnings(field: str, layout: Layout, choices: ReadChoices, scaled: ScaledPixels,
                      converted: ConvertedPixels | None) -> list[str]:
    """What a result computed on pixels read so should carry: data using a small part of its
    range, NaN values, further images of the file left unread (where no series was chosen),
    values clipped by the intensity choice."""
    intensity = choices.intensity
    if converted is None:
        warnings = [w for w in (low_range_warning(scaled.pixels, field, layout.significant_bits),) if w]
    else:
        warnings = [w for w in (converted.low_range_warning(field, intensity),) if w]
        if converted.not_a_number:
            warnings.append(f"{field}: {converted.not_a_number} NaN values were read as black")
    if layout.other_images and choices.series is None:
        warnings.append(
            f"{field}: the file holds {layout.other_images + 1} images (TIFF series); only "
            f"the first ({layout.describe()}) was read: choose another with the series read "
            f"option (params.series, 0-{layout.other_images}), or submit one file per image"
        )
    if scaled.clipped and intensity.kind == "bit-depth":
        warnings.append(
            f"{field}: {scaled.clipped} values above {scaled.white:g} were clipped by "
            f"intensity={intensity.text} (is the bit depth right?)"
        )
    elif scaled.clipped and intensity.kind == "range":
        warnings.append(
            f"{field}: {scaled.clipped} values outside {scaled.black:g}-{scaled.white:g} were "
            f"clipped by intensity={intensity.text}"
        )
    return warnings


def read_choices(image: tensor_pb2.Image, field: str = "image") -> ReadChoices:
    """The parsed ``read`` options of an Image message; InvalidArgument naming a bad one."""
    read = image.read
    return _parsed_choices(read.channels, read.plane, read.z_project, read.intensity, read.series,
                           field)


@functools.lru_cache(maxsize=256)
def _parsed_choices(channels: str, plane: str, z_project: str, intensity: str, series: str,
                    field: str) -> ReadChoices:
    """``read_choices`` of these texts, parsed once per distinct texts (every image of a batch
    usually has the same); a bad one raises each time, as errors are not cached."""
    texts = {"channels": channels, "plane": plane, "z_project": z_project, "intensity": intensity,
             "series": series}
    try:
        return ReadChoices.parse(**texts)
    except ValueError:
        for name, text in texts.items():
            try:
                ReadChoices.parse(**{name: text})
            except ValueError as error:
                raise InvalidArgument(f"{field}.read.{name}: {error}") from None
        raise


def _read_texts(image: tensor_pb2.Image) -> dict[str, str]:
    read = image.read
    return {"channels": read.channels, "plane": read.plane, "z_project": read.z_project,
            "intensity": read.intensity, "series": read.series}


def label_mask_info(image: tensor_pb2.Image, field: str, max_bytes: int | None = None) -> ImageInfo:
    """Shape and dtype of a label mask image from its header: one 2-D plane of integers.

    Masks are read as they are (no channels, planes or intensity scaling) and
    may be any integer type (int32 is what scikit-image and StarDist write).
    """
    limit = max_image_bytes() if max_bytes is None else max_bytes
    with _opened(image, field, limit) as source:
        return _mask_info(source.layout, field, limit)


def decode_label_mask(image: tensor_pb2.Image, field: str, max_bytes: int | None = None) -> np.ndarray:
    """The (H, W) integer labels of a mask image (see :func:`label_mask_info`)."""
    limit = max_image_bytes() if max_bytes is None else max_bytes
    with _opened(image, field, limit) as source:
        info = _mask_info(source.layout, field, limit)
        plan = ReadPlan(info.shape, info.dtype, info.decode_bytes, {}, "", "", None, False)
        labels = _guarded(source.fmt, source.data_field, lambda: read_planned(
            source.layout, plan, source.read_pages, field))
    if labels.shape != info.shape or labels.dtype != info.dtype:
        raise InvalidArgument(f"{source.data_field}.data: corrupt {source.fmt.upper()} image "
                              f"(decoded {list(labels.shape)} {labels.dtype})")
    return labels


def _mask_info(layout: Layout, field: str, limit: int) -> ImageInfo:
    if layout.axes != "YX" or layout.page_axes != "YX":
        raise InvalidArgument(
            f"{field}: a label mask is one 2-D plane of integers, got axes {layout.describe()}"
        )
    if layout.dtype not in MASK_DTYPES:
        raise InvalidArgument(
            f"{field}: expected an integer label mask ({', '.join(map(str, MASK_DTYPES))}), "
            f"got dtype {layout.dtype}"
        )
    shape = layout.shape
    decode_bytes = max(math.prod(shape) * layout.dtype.itemsize, layout.chunk_bytes)
    if decode_bytes > limit:
        raise InvalidArgument(
            f"{field}: mask of {shape[0]}x{shape[1]} {layout.dtype} takes {decode_bytes} bytes "
            f"decoded, over the limit of {limit} bytes (raise {MAX_IMAGE_BYTES_ENV} to accept it)"
        )
    return ImageInfo(shape, layout.dtype, decode_bytes)


@dataclass
class _Source:
    """An opened image: its layout and a reader of its pages."""

    layout: Layout
    read_pages: PageReader
    fmt: str
    data_field: str


def _series_field(field: str, choices_field: str) -> str:
    """How messages name the series read option."""
    return f"{choices_field}.series" if choices_field else f"{field}.read.series"


@contextmanager
def _opened(image: tensor_pb2.Image, field: str, limit: int, series: int | None = None,
            series_field: str = "") -> Iterator[_Source]:
    """The image's layout from its header (or tensor), and a page reader valid inside the block;
    ``series`` chooses an image of a file holding several (None: the first), named
    ``series_field`` in messages."""
    source = image.WhichOneof("source")
    if source is None:
        raise InvalidArgument(f"{field}: no image given (set tensor or encoded)")
    series_field = series_field or f"{field}.read.series"
    if source == "tensor":
        _check_single_image(series, series_field, "pixels sent as a tensor are")
        pixels = from_tensor(image.tensor, f"{field}.tensor", max_bytes=limit)
        if pixels.ndim not in (2, 3):
            raise InvalidArgument(
                f"{field}: expected (H, W) or (H, W, C) pixels, got shape {list(pixels.shape)}"
            )
        axes = "YX" if pixels.ndim == 2 else "YXS"
        layout = Layout(axes, pixels.shape, pixels.dtype, axes)
        yield _Source(layout, lambda keys: pixels[np.newaxis], "tensor", f"{field}.tensor")
        return
    if source == "blob":
        with _opened_blob(image.blob, f"{field}.blob") as (stream, fmt):
            with _opened_stream(stream, fmt, field, f"{field}.blob", series, series_field) as opened:
                yield opened
        return
    data_field = f"{field}.encoded"
    data, fmt = _encoded_bytes(image.encoded, data_field)
    # A file left on the request's wire is read in place; bytes are shared by BytesIO as they are.
    stream = io.BytesIO(data) if isinstance(data, bytes) else BufferFile(data)
    with _opened_stream(stream, fmt, field, data_field, series, series_field) as opened:
        yield opened


@contextmanager
def _opened_blob(reference: str, field: str) -> Iterator[tuple[BinaryIO, str]]:
    """The blob-store file of an image and its format (from its signature)."""
    try:
        check_reference(reference)
    except ValueError as error:
        raise InvalidArgument(f"{field}: {error}") from None
    with opened_blob(blob_store(), reference, field) as stream:
        fmt = detect_format(stream.read(16))
        stream.seek(0)
        if fmt is None:
            raise InvalidArgument(f"{field}: not a PNG, TIFF or JPEG file (unknown signature)")
        yield stream, fmt


def _check_single_image(series: int | None, series_field: str, what: str) -> None:
    """Refuse choosing an image other than the first of a source that holds one."""
    if series not in (None, 0):
        raise InvalidArgument(f"{series_field}: {what} one image (0), not {series}")


@contextmanager
def _opened_stream(
    stream: BinaryIO | io.RawIOBase, fmt: str, field: str, data_field: str,
    series: int | None = None, series_field: str = "",
) -> Iterator[_Source]:
    """The layout and page reader of an encoded image in a seekable file (for a TIFF, its image
    ``series``: None or 0 the first)."""
    if fmt == "tiff":
        index = series or 0
        with watch_tiff_damage() as damage, \
                _guarded(fmt, data_field, lambda: tifffile.TiffFile(stream)) as tif:
            layout = _guarded(fmt, data_field, lambda: tiff_layout(tif, field, index, series_field))
            if damage:  # tifffile read on past it: the pages or metadata it found are not all
                raise InvalidArgument(f"{data_field}.data: corrupt TIFF image (truncated or "
                                      f"damaged: {damage[0]}, in a file of "
                                      f"{tif.filehandle.size:,} bytes)")
            page_shape = layout.shape[len(layout.axes) - len(layout.page_axes):]

            def read_tiff(keys: Sequence[int]) -> np.ndarray:
                pages = tif.asarray(series=index, key=list(keys))
                return np.asarray(pages).reshape((len(keys), *page_shape))

            yield _Source(layout, read_tiff, fmt, data_field)
        return
    _check_single_image(series, series_field or f"{field}.read.series", f"a {fmt.upper()} file holds")
    with _guarded(fmt, data_field, lambda: PILImage.open(stream)) as img:
        layout = _guarded(fmt, data_field, lambda: _pillow_layout(img))
        yield _Source(layout, lambda keys: _decode_pillow(img)[np.newaxis], fmt, data_field)


def _plan(source: _Source, image: tensor_pb2.Image, field: str, choices_field: str = "") -> ReadPlan:
    dtype = source.layout.dtype
    if not readable_dtype(dtype):
        raise InvalidArgument(
            f"{field}: dtype {dtype} not supported; expected "
            f"{', '.join(str(d) for d in NATIVE_DTYPES + CONVERTED_DTYPES)}"
        )
    choices = read_choices(image, field)
    try:
        check_scaling(dtype, choices.intensity)
    except ValueError as error:
        raise InvalidArgument(f"{choices_field or field + '.read'}.intensity: {error}") from None
    return plan_reading(source.layout, choices, field, choices_field)


def _delivered_info(plan: ReadPlan) -> ImageInfo:
    """What reading by ``plan`` gives once mapped onto uint8/uint16 (labsight.pixel_types), with
    the memory of that mapping counted."""
    return ImageInfo(plan.shape, delivered_dtype(plan.dtype),
                     plan.decode_bytes + conversion_bytes(plan.shape, plan.dtype))


def _encoded_bytes(encoded: tensor_pb2.EncodedImage, field: str) -> tuple[bytes | memoryview, str]:
    """The encoded bytes (a view of the request's wire bytes where the model services' parser
    left them there, :mod:`labsight.tensor_wire`) and their format (from the signature, else the
    hint)."""
    data = resolve_detached(encoded.data)
    if not len(data):
        raise InvalidArgument(f"{field}.data: empty image bytes")
    hint = encoded.format.lower().strip()
    if hint and hint not in FORMAT_ALIASES:
        raise InvalidArgument(f"{field}.format: unknown format {echo(encoded.format)}")
    fmt = detect_format(data) or FORMAT_ALIASES.get(hint)
    if fmt is None:
        raise InvalidArgument(f"{field}.data: not a PNG, TIFF or JPEG file (unknown signature)")
    return data, fmt


_IN_MEMORY_FILE = re.compile(r" <_io\.\w+ object at 0x[0-9a-fA-F]+>")
"""How a decoder's message names the in-memory file it read (nothing the caller sent)."""


def _guarded(fmt: str, field: str, read: Callable[[], T]) -> T:
    """``read()``, with any decoder failure reported as the input's fault."""
    try:
        return read()
    except InvalidArgument:
        raise
    except Exception as exc:  # any decoder failure is the input's fault
        reason = _IN_MEMORY_FILE.sub("", str(exc))  # Pillow names the in-memory file it was given
        raise InvalidArgument(f"{field}.data: corrupt {fmt.upper()} image ({reason})") from exc


def tiff_layout(tif: tifffile.TiffFile, field: str = "image", series_index: int = 0,
                series_field: str = "") -> Layout:
    """The axes of a TIFF's image ``series_index`` (its first by default) from its metadata
    (ImageJ, OME, or pages and samples).

    Names of OME channels (or an ImageJ hyperstack's, from its slice labels) and OME
    SignificantBits (else BitsPerSample) are kept; a last sample marked as alpha by
    ExtraSamples counts as alpha. Whole-slide formats keep thumbnails and labels as further
    series: they hold one image. InvalidArgument (naming ``series_field``) for an image the
    file does not hold.
    """
    _check_pages(len(tif.pages), field)  # tifffile builds an object per page to find the series
    images = image_count(tif)
    if series_index >= images:
        raise InvalidArgument(f"{series_field or field + '.read.series'}: the file holds {images} "
                              f"image(s), 0-{images - 1}; not {series_index}")
    series = tif.series[series_index]
    page = series.keyframe
    if page.dtype is None:
        raise ValueError(f"unsupported sample format ({page.bitspersample} bits per sample)")
    axes, shape = series.axes, tuple(int(n) for n in series.shape)
    _check_page_data(tif, page)
    _check_codec(page, field)
    page_axes = page.axes
    if not axes.endswith(page_axes):
        raise InvalidArgument(f"{field}: TIFF series with axes {axes} whose pages have axes {page_axes}; "
                              "expected pages to hold the last axes")
    # Series from metadata (ImageJ, OME) may index more planes than IFDs; a projection reads each.
    _check_pages(math.prod(shape[: len(axes) - len(page_axes)]), field)
    names: tuple[str, ...] = ()
    bits: int | None = int(page.bitspersample)
    if tif.is_ome and tif.ome_metadata:
        names, ome_bits = _ome_channels(tif.ome_metadata, series_index)
        bits = ome_bits or bits
    elif tif.is_imagej and "C" in axes:
        names = _imagej_channel_names(tif.imagej_metadata or {}, shape[axes.index("C")])
    alpha = "S" in page_axes and any(int(extra) in (1, 2) for extra in page.extrasamples)
    chunk_bytes = math.prod(page.chunks) * np.dtype(page.dtype).itemsize
    return Layout(axes, shape, np.dtype(page.dtype), page_axes, chunk_bytes, names, alpha, bits,
                  images - 1, tiff_pixel_size(tif, series_index))


def _check_page_data(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> None:
    """Refuse a TIFF cut short, from the first page's header alone: ValueError if its data
    segments run past the end of the file, or if uncompressed (whole bytes per sample) they
    hold fewer bytes than its pixels take (reading such a file would fail only once its pixels are wanted)."""
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False)]
    size = tif.filehandle.size
    if ends and max(ends) > size:
        raise ValueError(f"truncated: the first page's data runs to byte {max(ends):,}, "
                         f"the file has {size:,} bytes")
    needed = math.prod(page.shape) * np.dtype(page.dtype).itemsize
    held = sum(page.databytecounts)
    if page.compression == 1 and page.bitspersample % 8 == 0 and held < needed:  # not bit-packed
        raise ValueError(f"truncated: the first page's {'x'.join(map(str, page.shape))} "
                         f"{page.dtype} pixels take {needed:,} bytes, its data holds {held:,}")


def _check_codec(page: tifffile.TiffPage, field: str) -> None:
    """Refuse a TIFF whose first page's compression no decoder here reads (tifffile with
    imagecodecs reads LZW, Deflate, Zstandard, PackBits, JPEG, JPEG 2000, WebP, ...), naming it,
    from the header: such a file is not corrupt, and its pixels would fail only once wanted."""
    try:
        tifffile.TIFF.DECOMPRESSORS[page.compression]
    except KeyError as error:
        name = getattr(page.compression, "name", "unknown")
        reason = error.args[0] if error.args else "no decoder"
        raise InvalidArgument(
            f"{field}: TIFF compression {name} (code {int(page.compression)}) cannot be decoded "
            f"here ({reason}); save the image uncompressed or with LZW, Deflate or Zstandard"
        ) from None


def _check_pages(pages: int, field: str) -> None:
    limit = max_tiff_pages()
    if pages > limit:
        raise InvalidArgument(
            f"{field}: TIFF with {pages} pages, over the limit of {limit} (raise "
            f"{MAX_TIFF_PAGES_ENV} to accept it)"
        )


def _ome_channels(xml: str, index: int = 0) -> tuple[tuple[str, ...], int | None]:
    """Channel names and SignificantBits of OME image ``index`` (the file's series of that index)."""
    root = ElementTree.fromstring(xml)
    images = root.findall("{*}Image")
    pixels = images[index].find("{*}Pixels") if index < len(images) else None
    if pixels is None:
        return (), None
    names = tuple(channel.get("Name", "") for channel in pixels.findall("{*}Channel"))
    bits = pixels.get("SignificantBits")
    return (names if any(names) else ()), (int(bits) if bits and bits.isdigit() else None)


def _imagej_channel_names(metadata: dict, channels: int) -> tuple[str, ...]:
    """Channel names of an ImageJ hyperstack from its slice labels: ImageJ keeps one label per
    plane, channels varying fastest, so where every plane of channel c bears one label, distinct
    from the other channels', those labels name the channels; () otherwise (labels naming
    planes, such as Bio-Formats' "c:1/2 z:3/5", or none)."""
    labels = metadata.get("Labels")
    if not isinstance(labels, list) or channels < 1 or len(labels) % channels:
        return ()
    names = tuple(str(label).strip() for label in labels[:channels])
    consistent = all(str(label).strip() == names[i % channels] for i, label in enumerate(labels))
    return names if consistent and all(names) and len(set(names)) == channels else ()


def _exif_orientation(img: PILImage.Image) -> int:
    """The EXIF orientation a PNG or JPEG states in its header (1, upright, where it states none
    or one that is not 1-8): a phone or camera photo stored sideways says so there.

    Only the EXIF Pillow found while opening the file is read (a JPEG's APP1, a PNG's eXIf
    before its pixels): ``getexif()`` would decode a whole PNG to look further, at submit,
    and swallow its decoding errors.
    """
    raw = img.info.get("exif")
    if not raw:
        return 1
    try:
        exif = PILImage.Exif()
        exif.load(raw)
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are still the image
        return 1
    return orientation if orientation in _EXIF_TURNS else 1


def _pillow_layout(img: PILImage.Image) -> Layout:
    """Axes of a PNG or JPEG from Pillow's header, after the mode conversion and EXIF turn of
    _decode_pillow."""
    orientation = _exif_orientation(img)
    width, height = img.size if orientation < 5 else img.size[::-1]
    raw = ImageMode.getmode(img.mode)
    final_mode = _CONVERTED_MODES.get(img.mode, img.mode)
    final = ImageMode.getmode(final_mode)
    dtype = np.dtype(final.typestr).newbyteorder("=")
    channels = len(final.bands)
    axes = "YX" if channels == 1 else "YXS"
    shape = (height, width) if channels == 1 else (height, width, channels)
    per_pixel = max(len(raw.bands) * np.dtype(raw.typestr).itemsize, channels * dtype.itemsize)
    return Layout(axes, shape, dtype, axes, height * width * per_pixel,
                  alpha=final_mode in _ALPHA_MODES, significant_bits=dtype.itemsize * 8,
                  exif_orientation=orientation)


def _decode_pillow(img: PILImage.Image) -> np.ndarray:
    orientation = _exif_orientation(img)  # from the header, as _pillow_layout read it
    img.load()
    if orientation in _EXIF_TURNS:
        img = img.transpose(_EXIF_TURNS[orientation])
    if img.mode in _CONVERTED_MODES:
        img = img.convert(_CONVERTED_MODES[img.mode])
    if img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16)
    return np.asarray(img)


def image_stack_header(tensor: tensor_pb2.Tensor, field: str) -> tuple[tuple[int, ...], np.dtype]:
    """The (N, H, W[, C]) shape and dtype of a stack of same-size images, checked as
    :func:`image_stack` checks the stack but from the tensor's header alone, so a gateway reads
    no pixel data at submit.

    Raises
    ------
    InvalidArgument
        Naming ``field`` for an unknown dtype, a rank other than 3 or 4, no image, a negative
        dimension, or a first image :func:`check_info` refuses.
    """
    dtype = numpy_dtype(tensor.dtype, field)
    shape = tuple(int(n) for n in tensor.shape)
    if len(shape) not in (3, 4) or shape[0] <= 0:
        raise InvalidArgument(f"{field}: expected (N, H, W) or (N, H, W, C), got {list(shape)}")
    if any(n < 0 for n in shape):
        raise InvalidArgument(f"{field}.shape: dimensions must be >= 0, got {list(shape)}")
    image_bytes = math.prod(shape[1:]) * dtype.itemsize
    check_info(ImageInfo(shape[1:], dtype, image_bytes), f"{field}[0]", max_image_bytes())
    return shape, dtype


def image_stack(tensor: tensor_pb2.Tensor, field: str) -> np.ndarray:
    """An (N, H, W[, C]) stack of same-size images from a Tensor, checked like one image.

    Raises
    ------
    InvalidArgument
        Naming ``field`` for a malformed tensor, a rank other than 3 or 4, no
        image, or a first image :func:`check_info` refuses.
    """
    stack = from_tensor(tensor, field)
    if stack.ndim not in (3, 4) or len(stack) == 0:
        raise InvalidArgument(f"{field}: expected (N, H, W) or (N, H, W, C), got {list(stack.shape)}")
    check_info(ImageInfo(stack.shape[1:], stack.dtype, stack[0].nbytes), f"{field}[0]", max_image_bytes())
    return stack


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 grey or RGB(A) array."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
