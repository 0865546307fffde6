"""The ``spot-features`` pipeline: patches around spots or cells, then their deep features."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from functools import partial
from typing import NamedTuple

import numpy as np

from labsight.blobs import blob_store, opened_blob
from labsight.errors import InvalidArgument, echo
from labsight.images import (
    ImageInfo,
    decode_label_mask,
    detect_format,
    image_info,
    label_mask_info,
    stated_pixel_size,
)
from labsight.intensity import DEFAULT_INTENSITY
from labsight.patches import spot_patches
from labsight.regions import readable_by_regions, tiff_regions
from labsight.spatial import EDGE, SPOT_EDGE_MODES
from labsight.tables import feature_table
from labsight.tensors import from_tensor, to_tensor, write_tensor
from labsight.v1 import features_pb2, segmentation_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import (
    InputReading,
    Parameter,
    Pipeline,
    RunContext,
    main_image_info,
    parse_bool,
    parse_micrometres,
)
from services.gateway.pipelines.costs import DEEP_FEATURES_COST
from services.gateway.pipelines.deep_features import (
    check_model_channels,
    check_model_work,
    extract_features,
    model_parameters,
)
from services.gateway.pipelines.models import MODEL_CATALOG, input_pixels

SPOT_CENTRES = "spot_centres"
CELL_LABELS = "cell_labels"
PATCH_BYTES_PER_CALL = 32 * 1024 * 1024
"""Patches asked of the segmentation service per call, in bytes (well under the message limit)."""


def parse_diameter(text: str) -> float:
    """A spot diameter in pixels, >= 0 (0: not given); ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of pixels, got {echo(text)}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, got {echo(text)}")
    return value


def spot_diameter_px(params: Mapping[str, str], image: tensor_pb2.Image) -> float:
    """The spots' diameter in pixels from a job's parameter texts: ``spot_diameter``, or
    ``spot_diameter_um`` over the pixel size the image file states (:mod:`labsight.pixel_size`).

    Raises
    ------
    InvalidArgument
        For both given, or ``spot_diameter_um`` with an image that states no pixel size.
    """
    pixels = parse_diameter(params.get("spot_diameter", "0"))
    micrometres = parse_micrometres(params.get("spot_diameter_um", ""))
    if micrometres is None:
        return pixels
    if pixels:
        raise InvalidArgument("params.spot_diameter_um: give the spot diameter in pixels "
                              "(spot_diameter) or in micrometres, not both")
    stated = stated_pixel_size(image, "input.image")
    if stated is None:
        raise InvalidArgument("params.spot_diameter_um: the image file states no pixel size (OME "
                              "PhysicalSizeX/Y, an ImageJ calibration, an Aperio MPP); give "
                              "spot_diameter in pixels")
    return micrometres / stated.um


def parse_spot_edge(text: str) -> str:
    """One of SPOT_EDGE_MODES; ValueError otherwise."""
    if text not in SPOT_EDGE_MODES:
        raise ValueError(f"expected one of {list(SPOT_EDGE_MODES)}, got {echo(text)}")
    return text


def parse_spot_ids(text: str) -> list[str]:
    """Comma-separated spot ids (barcodes); empty for none."""
    return [part.strip() for part in text.split(",")] if text.strip() else []


def _report_features(
    context: RunContext, slice_index: tuple[int, int], patches: int, counts: tuple[int, int], done: int
) -> None:
    """Progress after ``done`` of ``patches`` features of slice ``slice_index`` = (i, count);
    ``counts`` = (patches of the slices before, patches of the job), for the rate."""
    index, count = slice_index
    before, total = counts
    context.report_progress((index + done / patches) / count, "features", before + done, total, "patches")


class PatchSlice(NamedTuple):
    """The patches of one slice of the requests, as arrays (cut by the service or here)."""

    index: int
    count: int
    pixels: np.ndarray
    ids: list[str]
    centres: np.ndarray
    at_edge: list[bool]


def _patches_asked(requests: list[segmentation_pb2.ExtractPatchesRequest]) -> int:
    """How many patches ``requests`` ask for (spots or cells; 0 when a request names none)."""
    return sum(
        len(request.cell_label_ids) or (request.spot_centres.shape[0] if request.spot_centres.shape else 0)
        for request in requests
    )


class SpotFeaturesPipeline(Pipeline):
    """ExtractPatches on the segmentation service, then ExtractDeepFeatures on the patches."""

    name = "spot-features"
    description = (
        "Deep features of square patches around spatial-transcriptomics spots (tensor "
        "'spot_centres' (N, 2) as x, y pixels, with params.spot_diameter) or of one patch per "
        "labelled cell (image or tensor 'cell_labels'); patches are resized to the model input. "
        "Default model: Inception-v3, 2048-d average pool. Result: table 'features' "
        "keyed by spot id or cell label, tensor 'coordinates' (N, 2) patch centres, tensor "
        "'edge' (N,) 1 where a patch reached past the image border and was padded."
    )
    parameters = (
        *model_parameters("inception-v3"),
        Parameter("spot_diameter", "Side of each spot's square patch in pixels (spot mode).", "0",
                  parse_diameter),
        Parameter("spot_diameter_um", "The spots' diameter in micrometres instead (Visium: 55), "
                  "over the pixel size the image file states (OME, ImageJ, Aperio MPP); empty: "
                  "spot_diameter.", "", parse_micrometres),
        Parameter("spot_ids", "Comma-separated spot ids, one per centre; default 0..N-1.", "",
                  parse_spot_ids),
        Parameter("spot_edge", "Spots whose patch reaches past the image border: pad-constant "
                  "(zeros), pad-reflect (mirrored), pad-edge (border pixel repeated), all flagged "
                  "in tensor 'edge', or drop (left out). A centre outside the image is refused.",
                  "pad-constant", parse_spot_edge),
        Parameter("blank_other_cells", "Blank other cells' pixels in each cell patch (true/false).",
                  "false", parse_bool),
    )

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """A grey or RGB image; spots whose centres lie inside it, or a cell mask of its size;
        a known model; patches within the work limit."""
        info = main_image_info(job_input, info)
        check_model_channels(info.channels, "input.image")
        has_spots = SPOT_CENTRES in job_input.tensors
        has_cells = CELL_LABELS in job_input.tensors or CELL_LABELS in job_input.images
        if has_spots == has_cells:
            raise InvalidArgument(
                f"input: give exactly one of tensors[{SPOT_CENTRES!r}] or a {CELL_LABELS!r} mask"
            )
        if has_spots:
            patches = check_spots(params, job_input, info)
        else:
            patches = count_cells(params, job_input, info)
        check_model_work(params, patches, "input")

    def reads_regions(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """Spots on a blob-store TIFF read as it is (all channels, one plane of uint8 or uint16,
        full range) are cut by the worker from the tiles under each spot; anything else goes
        whole to the segmentation service."""
        image = job_input.image
        if image.WhichOneof("source") != "blob" or SPOT_CENTRES not in job_input.tensors:
            return False
        as_is = {"channels": "", "plane": "", "z_project": "", "intensity": DEFAULT_INTENSITY,
                 "series": ""}
        if any(params.get(name, default) != default for name, default in as_is.items()):
            return False
        with opened_blob(blob_store(), image.blob, "input.image.blob") as stream:
            return detect_format(stream.read(16)) == "tiff" and readable_by_regions(stream)

    def read_input(self, job_input: pb.JobInput, params: Mapping[str, str]) -> InputReading:
        """As every pipeline, but a slide read by regions is never decoded whole, so only its
        header is read (no low-range warning: that needs every pixel)."""
        if not self.reads_regions(job_input, params):
            return super().read_input(job_input, params)
        image_info(job_input.image, "input.image")
        return InputReading([], {"intensity": DEFAULT_INTENSITY,
                                 "image_read": "by regions from the blob store"})

    def run(self, context: RunContext) -> pb.JobResult:
        """Cut patches in slices that fit a message, extract their features, one row per patch."""
        side = self._model_input_side(context)
        columns: list[str] = []
        provenance: dict[str, str] = {}
        values: list[np.ndarray] = []
        ids: list[str] = []
        centres: list[np.ndarray] = []
        at_edge: list[bool] = []
        requests = self._patch_requests(context, side)
        if self.reads_regions(context.job_input, context.params):
            slices = self._region_patches(context, requests)
        else:
            slices = self._service_patches(context, requests)
        total, finished = _patches_asked(requests), 0
        for piece in slices:
            patches = piece.pixels
            columns, chunk_values, provenance = extract_features(
                context,
                patches,
                partial(_report_features, context, (piece.index, piece.count), len(patches),
                        (finished, total)),
            )
            finished += len(patches)
            values.append(chunk_values)
            ids.extend(piece.ids)
            centres.append(piece.centres)
            at_edge.extend(piece.at_edge)
        result = pb.JobResult(pipeline=self.name, provenance=provenance)
        if requests[0].spot_diameter:  # spots: the diameter in pixels, given or from micrometres
            result.provenance["spot_diameter_px"] = f"{requests[0].spot_diameter:.7g}"
        result.tables["features"].CopyFrom(feature_table(columns, np.concatenate(values), ids))
        result.tensors["coordinates"].CopyFrom(to_tensor(np.concatenate(centres)))
        result.tensors[EDGE].CopyFrom(to_tensor(np.array(at_edge, np.uint8)))
        context.report_progress(1.0, "features", finished, total, "patches")
        return result

    def _service_patches(
        self, context: RunContext, requests: list[segmentation_pb2.ExtractPatchesRequest]
    ) -> Iterator[PatchSlice]:
        """The slices cut by the segmentation service, a message each."""
        for index, request in enumerate(requests):
            context.report_progress(index / len(requests), "patches")
            answer: segmentation_pb2.ExtractPatchesResponse = (
                context.services.segmentation.ExtractPatches(
                    request, timeout=context.services.call_timeout_s
                )
            )
            yield PatchSlice(
                index, len(requests), from_tensor(answer.patches, "patches"), list(answer.patch_ids),
                from_tensor(answer.patch_centres, "patch_centres"), list(answer.patch_at_edge),
            )

    def _region_patches(
        self, context: RunContext, requests: list[segmentation_pb2.ExtractPatchesRequest]
    ) -> Iterator[PatchSlice]:
        """The same slices cut here from the tiles under each spot of a blob-store TIFF, with
        the segmentation service's geometry (labsight.patches), so the slide is never whole;
        the patches stay arrays (no message to encode and decode again)."""
        with ExitStack() as opened:
            stream = opened.enter_context(
                opened_blob(blob_store(), context.job_input.image.blob, "input.image.blob")
            )
            try:
                image = opened.enter_context(tiff_regions(stream))
            except ValueError as error:
                raise InvalidArgument(f"input.image.blob: {error}") from None
            for index, request in enumerate(requests):
                context.report_progress(index / len(requests), "patches")
                centres = from_tensor(request.spot_centres, "spot_centres")
                try:
                    patches = spot_patches(image, centres, request.spot_diameter, request.output_size,
                                           edge=request.spot_edge)
                except ValueError as error:
                    raise InvalidArgument(f"input: {error}") from None
                yield PatchSlice(
                    index, len(requests), patches.pixels,
                    [request.spot_ids[i] for i in patches.labels], patches.centres,
                    patches.at_edge.tolist(),
                )

    def _model_input_side(self, context: RunContext) -> int:
        """The input side of the model (empty: the service's default); InvalidArgument for an unknown one."""
        listing: features_pb2.ListModelsResponse = context.services.features.ListModels(
            features_pb2.ListModelsRequest(), timeout=context.services.call_timeout_s
        )
        name = context.params["model"] or listing.default_model
        for model in listing.models:
            if model.name == name:
                return int(model.input_size[0])
        known = [model.name for model in listing.models]
        raise InvalidArgument(f"params.model: unknown model {echo(context.params['model'])}; models: {known}")

    def _patch_requests(
        self, context: RunContext, side: int
    ) -> list[segmentation_pb2.ExtractPatchesRequest]:
        """One request for a cell mask; spot requests in slices of at most PATCH_BYTES_PER_CALL."""
        job_input = context.job_input
        params = self.parsed(context.params)
        base = segmentation_pb2.ExtractPatchesRequest(image=job_input.image, output_size=side)
        info = image_info(job_input.image, "input.image")
        patch_bytes = side * side * info.dtype.itemsize * info.channels
        per_call = max(1, PATCH_BYTES_PER_CALL // patch_bytes)
        requests = []
        if SPOT_CENTRES not in job_input.tensors:
            mask = (
                from_tensor(job_input.tensors[CELL_LABELS], f"input.tensors[{CELL_LABELS}]")
                if CELL_LABELS in job_input.tensors
                else decode_label_mask(job_input.images[CELL_LABELS], f"input.images[{CELL_LABELS}]")
            )
            if CELL_LABELS in job_input.tensors:  # as sent: decoding and encoding it gives the same
                base.cell_labels.CopyFrom(job_input.tensors[CELL_LABELS])
            else:
                write_tensor(base.cell_labels, mask)
            base.blank_other_cells = bool(params["blank_other_cells"])
            cells = cell_label_ids(mask)
            for start in range(0, len(cells), per_call):
                request = segmentation_pb2.ExtractPatchesRequest()
                request.CopyFrom(base)
                request.cell_label_ids.extend(cells[start : start + per_call])
                requests.append(request)
            return requests or [base]  # no cell or not an integer mask: the service says which
        centres = from_tensor(job_input.tensors[SPOT_CENTRES], f"input.tensors[{SPOT_CENTRES}]")
        ids = list(params["spot_ids"]) or [str(i) for i in range(len(centres))]
        diameter = spot_diameter_px(context.params, job_input.image)
        for start in range(0, len(centres), per_call):
            request = segmentation_pb2.ExtractPatchesRequest()
            request.CopyFrom(base)
            write_tensor(request.spot_centres, centres[start : start + per_call])
            request.spot_diameter = diameter
            request.spot_edge = str(params["spot_edge"])
            request.spot_ids.extend(ids[start : start + per_call])
            requests.append(request)
        return requests


def check_spots(params: dict[str, str], job_input: pb.JobInput, info: ImageInfo) -> int:
    """Number of spots to cut, after checking that each centre lies inside the image.

    A patch that reaches past the border is padded (or its spot dropped, with
    spot_edge=drop) by the segmentation service, whose geometry this follows
    (labsight/patches.py): side = round(diameter), top-left corner
    = round(centre - side / 2), a centre inside when its nearest pixel is.
    """
    field = f"input.tensors[{SPOT_CENTRES}]"
    centres = from_tensor(job_input.tensors[SPOT_CENTRES], field)
    if centres.ndim != 2 or centres.shape[1] != 2 or len(centres) == 0:
        raise InvalidArgument(f"{field}: expected (N, 2) x, y coordinates, got shape {list(centres.shape)}")
    if centres.dtype.kind not in "iuf" or not np.all(np.isfinite(centres)):
        raise InvalidArgument(f"{field}: coordinates must be finite numbers")
    ids = parse_spot_ids(params["spot_ids"])
    if ids and len(ids) != len(centres):
        raise InvalidArgument(f"params.spot_ids: {len(ids)} ids for {len(centres)} spot centres")
    diameter = spot_diameter_px(params, job_input.image)
    if diameter < 1:
        raise InvalidArgument("params.spot_diameter: give the spot diameter in pixels (>= 1), or "
                              "spot_diameter_um in micrometres")
    side = int(np.floor(diameter + 0.5))
    if side > min(info.height, info.width):
        raise InvalidArgument(
            f"params.spot_diameter: a {side}x{side} patch does not fit in the "
            f"{info.height}x{info.width} image"
        )
    centres = centres.astype(np.float64)
    nearest = np.floor(centres + 0.5)
    outside = np.flatnonzero(
        (nearest[:, 0] < 0) | (nearest[:, 1] < 0)
        | (nearest[:, 0] >= info.width) | (nearest[:, 1] >= info.height)
    )
    if len(outside):
        i = int(outside[0])
        raise InvalidArgument(
            f"{field}[{i}]: the centre (x={centres[i, 0]}, y={centres[i, 1]}) lies outside the "
            f"{info.height}x{info.width} image ({len(outside)} spots do)"
        )
    if params["spot_edge"] != "drop":
        return len(centres)
    corners = np.floor(centres - side / 2 + 0.5)
    inside = np.count_nonzero(
        (corners[:, 0] >= 0) & (corners[:, 1] >= 0)
        & (corners[:, 0] + side <= info.width) & (corners[:, 1] + side <= info.height)
    )
    if inside == 0:
        raise InvalidArgument(
            f"params.spot_edge: every spot's {side}x{side} patch reaches past the border of the "
            f"{info.height}x{info.width} image, so drop leaves none; pad them instead"
        )
    return int(inside)


def count_cells(params: dict[str, str], job_input: pb.JobInput, info: ImageInfo) -> int:
    """Number of cells of the mask (or a bound on it), after checking its type and size.

    Counting reads every label, so it is done only when the cheap bound (the
    largest label the mask's dtype or values allow) would exceed the work limit.
    """
    if CELL_LABELS in job_input.tensors:
        field = f"input.tensors[{CELL_LABELS}]"
        mask = from_tensor(job_input.tensors[CELL_LABELS], field)
        shape, dtype = mask.shape, mask.dtype
    else:
        field = f"input.images[{CELL_LABELS}]"
        header = label_mask_info(job_input.images[CELL_LABELS], field)
        mask, shape, dtype = None, header.shape, header.dtype
    if dtype.kind not in "iu":
        raise InvalidArgument(f"{field}: expected an integer label mask, got dtype {dtype}")
    if shape != (info.height, info.width):
        raise InvalidArgument(
            f"{field}: shape {list(shape)} does not match the image's {[info.height, info.width]}"
        )
    bound = min(info.height * info.width, int(mask.max()) if mask is not None else np.iinfo(dtype).max)
    if bound < 1:
        raise InvalidArgument(f"{field}: the mask holds no cell (no label is above 0)")
    model = MODEL_CATALOG.check(params["model"], params["layer"])
    if bound * input_pixels(model) <= DEEP_FEATURES_COST.value():
        return bound
    if mask is None:
        mask = decode_label_mask(job_input.images[CELL_LABELS], field)
    return len(cell_label_ids(mask))


def cell_label_ids(mask: np.ndarray) -> list[int]:
    """The cell labels of an integer mask in increasing order (0 and negatives are background)."""
    if mask.dtype.kind not in "iu":
        return []
    labels = np.unique(mask)
    return labels[labels > 0].tolist()
