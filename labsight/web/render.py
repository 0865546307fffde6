"""What the web page shows of a job, computed server-side: PNG images, table rows, CSV and TIFF."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import tifffile
from matplotlib.figure import Figure
from PIL import Image as PilImage

from labsight.cell_images import read_cell_image
from labsight.columns import CELL_CHANNELS
from labsight.images import decode_image
from labsight.plots.cell_classes import cell_classes_figure, is_cell_classes_result
from labsight.plots.masks import composite, has_masks, masks_figure
from labsight.result import Result, tiff_resolution
from labsight.v1 import tensor_pb2

TABLE_ROWS = 20
"""Rows of a feature table the page shows (the CSV has them all)."""
TOP_CLASSES = 3
"""Classes per cell the page lists, most probable first."""
DISPLAY_PIXELS = 16 * 1024 * 1024
"""Inputs decoding to more bytes than this are not kept for display (the masks are drawn alone)."""


def input_pixels(main: tensor_pb2.Image | None,
                 channels: Mapping[str, tensor_pb2.Image]) -> np.ndarray | None:
    """The decoded pixels of a job's input for display: the four channel images stacked
    (H, W, 4) or the main image as it reads; None when they do not decode or are too large
    (the gateway's answer to the submission says what is wrong with them)."""
    try:
        if channels:
            parts = [(f"input.images[{c}]", channels[c]) for c in CELL_CHANNELS if c in channels]
            return read_cell_image(parts, DISPLAY_PIXELS)
        if main is None:
            return None
        return decode_image(main, "input.image", DISPLAY_PIXELS)
    except Exception:  # noqa: BLE001 - any unreadable input just has no picture
        return None


def composite_png(pixels: np.ndarray) -> bytes:
    """The RGB composite of an input as PNG: four channels as HPA's red, green, blue and
    yellow (yellow adding to red and green), two magenta and green, grey as grey, each
    stretched to its range (``labsight.plots.masks.composite``)."""
    rgb = composite(pixels)
    buffer = io.BytesIO()
    PilImage.fromarray(np.round(rgb * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def has_mask_picture(result: Result) -> bool:
    """Whether the result has label masks the page can draw (segmentation pipelines)."""
    return has_masks(result.message)


def has_classes_picture(result: Result) -> bool:
    """Whether the result has cell classes the page can draw (hpa-cells)."""
    return is_cell_classes_result(result.message)


def masks_png(result: Result, pixels: np.ndarray | None) -> bytes:
    """The cells and nuclei of a segmentation result with their ids, drawn by
    ``labsight.plots.masks`` as PNG; with the input's four channels ``pixels`` (of the masks'
    size) their outlines are drawn over the channels too."""
    return figure_png(masks_figure(result.message, _channels_of_masks(result, pixels), ids=True))


def classes_png(result: Result, pixels: np.ndarray | None) -> bytes:
    """The cells of an hpa-cells result coloured by their top class, drawn by
    ``labsight.plots.cell_classes`` as PNG (over the channels too, as :func:`masks_png`)."""
    return figure_png(cell_classes_figure(result.message, _channels_of_masks(result, pixels)))


def _channels_of_masks(result: Result, pixels: np.ndarray | None) -> np.ndarray | None:
    """``pixels`` when they are of the masks' size (HPA's four channels, or the channels of an
    image named by role), else None."""
    cells = result.tensor("cell_labels")
    return pixels if pixels is not None and pixels.shape[:2] == cells.shape else None


def figure_png(figure: Figure) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def table_preview(result: Result, rows: int = TABLE_ROWS) -> dict[str, object]:
    """The first ``rows`` rows of the result's main table: its name, columns, row ids and
    values (NaN and infinities as None, which JSON has no numbers for)."""
    if not result.tables:
        return {"name": "", "columns": [], "rows": [], "total_rows": 0}
    name = result.main_table
    table = result.tables[name]
    values = result.to_numpy(name)[:rows]
    return {
        "name": name,
        "columns": list(table.columns),
        "rows": [[row_id, *map(_json_number, line)]
                 for row_id, line in zip(table.row_ids, values.tolist(), strict=False)],
        "total_rows": len(table.row_ids),
    }


def cell_classes(result: Result, top: int = TOP_CLASSES) -> list[dict[str, object]]:
    """Each cell's ``top`` most probable classes with their probabilities (hpa-cells results;
    an empty list for others)."""
    if not is_cell_classes_result(result.message):
        return []
    frame = result.to_pandas("classes")
    columns = [c for c in frame.columns if c.startswith("p_")]
    names = result.provenance.get("classifier_classes", "").split("; ")
    if len(names) != len(columns):  # the columns are in the classes' order, named in lower case
        names = [c.removeprefix("p_") for c in columns]
    probabilities = frame[columns].to_numpy(np.float64)
    labels = frame["label"].to_numpy(np.int64)
    order = np.argsort(-probabilities, axis=1)[:, :top]
    return [
        {"cell": int(label),
         "classes": [{"name": names[k], "p": _json_number(row[k])} for k in ranks]}
        for label, row, ranks in zip(labels, probabilities, order, strict=True)
    ]


def table_csv(result: Result) -> bytes:
    """The result's main table as CSV (row ids in column ``id``)."""
    return result.to_pandas().to_csv().encode()


def masks_tiff(result: Result) -> bytes:
    """The result's label masks as one int32 TIFF, a page per mask (nuclei, then cells)."""
    masks = result.label_masks()
    kinds = mask_kinds(result)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.stack([masks[kind].astype(np.int32) for kind in kinds]),
                     compression="zlib", metadata={"axes": "QYX", "masks": ",".join(kinds)},
                     **tiff_resolution(result.pixel_size_um))
    return buffer.getvalue()


def mask_kinds(result: Result) -> Sequence[str]:
    """The kinds of label masks in the result (``nuclei``, ``cells``), none for most pipelines."""
    try:
        return sorted(result.label_masks(), reverse=True)
    except KeyError:
        return []


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None
