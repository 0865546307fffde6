"""The ``cells`` pipeline: nucleus and cell label masks of a 4-channel image and a table of its cells."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from labsight.cell_images import (
    CELL_METHODS,
    ChannelParts,
    cell_image_info,
    check_answer_size,
)
from labsight.channel_roles import (
    ChannelChoice,
    channel_names_as_read,
    parse_channel_choice,
    parse_cytoplasm_choices,
    resolve_channel,
)
from labsight.columns import CELL_CHANNELS
from labsight.config import answer_room
from labsight.errors import InvalidArgument, echo
from labsight.images import ImageInfo, image_info, read_image
from labsight.intensity import check_bit_depth, parse_intensity
from labsight.pixel_size import PixelSize, choose_pixel_size, first_stated
from labsight.tables import table_values
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.tensors import to_tensor
from labsight.v1 import classifier_pb2, segmentation_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import (
    InputReading,
    Parameter,
    Pipeline,
    RunContext,
    parse_micrometres,
    read_options,
    sendable_pixels,
)

CellImageRequest = segmentation_pb2.SegmentCellsRequest | classifier_pb2.ClassifyCellsRequest
"""The requests that carry a 4-channel cell image (``image`` or ``channel_images``)."""

HPA_PIXEL_SIZE_UM = 0.08
"""Pixel size of the Human Protein Atlas images (µm), the default where the image file states none."""


def parse_method(text: str) -> str:
    """A segmentation method name, or empty for the service's default; ValueError otherwise."""
    if text and text not in CELL_METHODS:
        raise ValueError(f"expected one of {list(CELL_METHODS)} (or empty for the default), "
                         f"got {echo(text)}")
    return text


MAX_EXPAND_UM = 100.0
"""The farthest ``expand_um`` may grow a nucleus into its cell (the segmentation service's
services.segmentation.roles.MAX_EXPAND_UM, which a test pins it to)."""


def parse_expand(text: str) -> float:
    """A distance in micrometres from 0 to MAX_EXPAND_UM; ValueError otherwise."""
    try:
        value = float(text) if text.strip() else 0.0
    except ValueError:
        raise ValueError(f"expected a number of micrometres, got {echo(text)}") from None
    if not 0 <= value <= MAX_EXPAND_UM:  # NaN fails too
        raise ValueError(f"expected 0 to {MAX_EXPAND_UM:g} µm, got {echo(text)}")
    return value


CELL_PARAMETERS = (
    Parameter("method", f"Segmentation method: {' or '.join(CELL_METHODS)}; empty: the "
              "segmentation service's default.", "", parse_method),
    Parameter("pixel_size_um", "Pixel size in micrometres: object sizes and the µm² areas "
              "follow it. Empty: the one the image file states (OME PhysicalSizeX/Y, ImageJ "
              "calibration, TIFF resolution in cm), else 0.08 (HPA images).", "",
              parse_micrometres),
)
"""The parameters of every pipeline that segments cells (cells, hpa-cells)."""

ROLE_PARAMETERS = (
    Parameter("nucleus_channel", "For an image that is not HPA's red, green, blue, yellow (a DAPI "
              "image, DAPI + a protein, ...): the nuclear stain, by index among the channels as "
              "read or by the name the file gives it (e.g. DAPI). Then the image may have any "
              "number of channels and the table measures each under its name (mean_dapi, ...). "
              "Empty: HPA's 4 channels.", "", parse_channel_choice),
    Parameter("cytoplasm_channels", "With nucleus_channel: up to two channels of a cytoplasm or "
              "membrane stain (index or name, e.g. CellMask) the cells grow over. Empty: each cell "
              "is its nucleus grown by expand_um.", "", parse_cytoplasm_choices),
    Parameter("expand_um", "With nucleus_channel and no cytoplasm_channels: how far each nucleus "
              "grows into its cell, in µm, stopping where cells meet (CellProfiler's "
              "IdentifySecondaryObjects by distance). 0: each cell is its nucleus.", "0",
              parse_expand),
)
"""The cells pipeline's parameters for images whose channels are named by role."""


def channel_parts(job_input: pb.JobInput) -> ChannelParts:
    """The job's channels as (field, image) pairs: its main 4-channel image, or its images
    red, green, blue and yellow.

    Raises
    ------
    InvalidArgument
        For both forms or neither, a missing channel or an unknown role.
    """
    roles = set(job_input.images)
    has_image = job_input.image.WhichOneof("source") is not None
    if has_image == bool(roles):
        raise InvalidArgument(
            "input: give either one 4-channel image (input.image) or one image per channel "
            f"(input.images {', '.join(CELL_CHANNELS)}), not both"
            if has_image else
            "input: give one 4-channel image (input.image) or one image per channel "
            f"(input.images {', '.join(CELL_CHANNELS)})"
        )
    if has_image:
        return [("input.image", job_input.image)]
    unknown = sorted(roles - set(CELL_CHANNELS))
    if unknown:
        raise InvalidArgument(f"input.images: unknown role(s) {[echo(r) for r in unknown]}; the "
                              f"roles are {', '.join(CELL_CHANNELS)}")
    missing = [channel for channel in CELL_CHANNELS if channel not in roles]
    if missing:
        raise InvalidArgument(f"input.images: no image for channel(s) {', '.join(missing)}; give "
                              f"one image per channel ({', '.join(CELL_CHANNELS)})")
    return [(f"input.images[{channel}]", job_input.images[channel]) for channel in CELL_CHANNELS]


def with_cell_image(request: CellImageRequest, context: RunContext) -> CellImageRequest | EncodedMessage:
    """A SegmentCells or ClassifyCells ``request`` with the job's 4-channel image, to send.

    Where the job sent image files, the pixels the worker read them to (the context's
    ``image_pixels``, as every service reads them) go as one (H, W, 4) tensor if they fit a
    message, so no service decodes the files again: four 2048² PNG channels take about 100 ms
    to decode, and an hpa-cells job sent them to two services. They are copied once, into the
    request's bytes (``serialize_with_arrays``). Pixel tensors and files the worker did not
    keep go in the message as they came.
    """
    parts = channel_parts(context.job_input)
    pixels = sendable_pixels(context)
    if pixels is not None:
        request.image.name = parts[0][1].name
        return EncodedMessage(serialize_with_arrays(request, {"image.tensor": pixels}))
    if len(parts) == 1:
        request.image.CopyFrom(parts[0][1])
    else:
        request.channel_images.extend(image for _, image in parts)
    return request


class CellsPipeline(Pipeline):
    """Runs SegmentationService.SegmentCells on the job's 4-channel image, or on an image whose
    channels its role parameters name."""

    name = "cells"
    description = (
        "Nuclei and whole cells of a fluorescence image with the Human Protein Atlas channels "
        "red (microtubules), green (protein), blue (nuclei), yellow (ER): one 4-channel image "
        "(params.channels picks 4 of a larger file), or one grey image per channel as inputs "
        "red, green, blue, yellow; or any image whose nuclear stain params.nucleus_channel "
        "names (a DAPI image, DAPI + proteins; cytoplasm_channels or expand_um make the cells). "
        "Result: tensors 'nucleus_labels' and 'cell_labels' (H, W) "
        "uint16 (int32 beyond 65535 labels), cell k containing nucleus k; table 'cells' "
        "(areas, centroid, bounding box, shape, intensities per channel; `labsight columns cells` "
        "explains each); tensor "
        "'coordinates' (N, 2) cell centroids x, y."
    )
    parameters = (*CELL_PARAMETERS, *ROLE_PARAMETERS)

    def sends_read_pixels(self, job_input: pb.JobInput) -> bool:
        """Yes where the job's image (or one of its channel images) is a file: see
        :func:`with_cell_image`."""
        return any(image.WhichOneof("source") == "encoded" for _, image in channel_parts(job_input))

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """Four channels of one size and bit depth, within the image limit, whose label masks
        fit an answer; read by the job's channels, plane, z_project and intensity. With
        ``nucleus_channel``: one image of any channels, in which the roles name channels."""
        parts = channel_parts(job_input)
        if params.get("nucleus_channel"):
            self._check_roles(params, parts, info)
            return
        if params.get("cytoplasm_channels") or params.get("expand_um", "0") not in ("", "0"):
            raise InvalidArgument("params.cytoplasm_channels, params.expand_um: only with "
                                  "params.nucleus_channel (HPA's 4 channels have their roles)")
        if len(parts) > 1:
            if params["channels"]:
                raise InvalidArgument("params.channels: picks channels of one multi-channel image; "
                                      "with one image per channel leave it empty")
            for _, image in parts:
                image.read.CopyFrom(read_options(params))
        info = cell_image_info(parts, choices_field="params")
        try:
            check_bit_depth(parse_intensity(params["intensity"]).bits, info.dtype)
        except ValueError as error:
            raise InvalidArgument(f"params.intensity: {error}") from None
        field = parts[0][0] if len(parts) == 1 else "input.images"
        check_answer_size(info, field, answer_room())

    def _check_roles(self, params: dict[str, str], parts: ChannelParts,
                     info: ImageInfo | None) -> None:
        """One image (not HPA's channel files) whose channels as read include the roles'."""
        if len(parts) > 1 or info is None:
            raise InvalidArgument("params.nucleus_channel: names a channel of one image "
                                  "(input.image); one image per channel is HPA's red, green, "
                                  "blue, yellow")
        try:
            check_bit_depth(parse_intensity(params["intensity"]).bits, info.dtype)
        except ValueError as error:
            raise InvalidArgument(f"params.intensity: {error}") from None
        role_request(params, parts[0][1], info.channels)
        check_answer_size(info, parts[0][0], answer_room())

    def read_input(self, job_input: pb.JobInput, params: Mapping[str, str]) -> InputReading:
        """As every pipeline; with one image per channel, each is read, its warnings are named
        after its channel, and the pixels are the (H, W, 4) stack of the channels."""
        parts = channel_parts(job_input)
        if len(parts) == 1:
            return super().read_input(job_input, params)
        warnings: list[str] = []
        provenance: dict[str, str] = {}
        channels: list[np.ndarray] = []
        sizes: list[tuple[str, PixelSize | None]] = []
        for field, image in parts:
            reading = read_image(image, field, choices_field="params")
            warnings += [f"{field}: {warning}" for warning in reading.warnings]
            provenance.update(reading.provenance)
            channels.append(reading.pixels)
            sizes.append((field, reading.pixel_size))
        pixel_size, disagreements = first_stated(sizes)
        if pixel_size is not None:
            provenance["image_pixel_size"] = pixel_size.describe()
        return InputReading(warnings + disagreements, provenance, np.stack(channels, axis=-1),
                            pixel_size)

    def run(self, context: RunContext) -> pb.JobResult:
        """One SegmentCells call; its masks, table and centroids become the result."""
        params = self.parsed(context.params)
        pixel_size = choose_pixel_size(
            params["pixel_size_um"], context.image_pixel_size,  # type: ignore[arg-type]
            HPA_PIXEL_SIZE_UM, "params.pixel_size_um")
        request = segmentation_pb2.SegmentCellsRequest(
            method=str(params["method"]), pixel_size_um=pixel_size.um
        )
        if context.params.get("nucleus_channel"):
            image = context.job_input.image
            count = image_info(image, "input.image", choices_field="params").channels
            request.roles.CopyFrom(role_request(context.params, image, count))
        context.report_progress(0.0, "segmentation")
        answer: segmentation_pb2.SegmentCellsResponse = context.services.segmentation.SegmentCells(
            with_cell_image(request, context), timeout=context.services.call_timeout_s
        )
        result = pb.JobResult(pipeline=self.name, provenance={
            "segmentation_method": answer.method, "segmentation_model": answer.model,
            "pixel_size_um": f"{answer.pixel_size_um:.7g}", "pixel_size_source": pixel_size.source,
        })
        result.warnings.extend(pixel_size.warnings)
        result.tensors["nucleus_labels"].CopyFrom(answer.nucleus_labels)
        result.tensors["cell_labels"].CopyFrom(answer.cell_labels)
        result.tables["cells"].CopyFrom(answer.cells)
        values = table_values(answer.cells, "cells")
        columns = list(answer.cells.columns)
        centroids = values[:, [columns.index("centroid_x"), columns.index("centroid_y")]]
        result.tensors["coordinates"].CopyFrom(to_tensor(np.ascontiguousarray(centroids)))
        result.scalars["cell_count"] = float(len(answer.cells.row_ids))
        if not answer.cells.row_ids and pixel_size.source == "default":
            result.warnings.append(
                f"no cells found at the default pixel size of {HPA_PIXEL_SIZE_UM:g} µm (HPA's 63× "
                "images; the image file states none): if the image is not at that scale, set "
                "params.pixel_size_um")
        context.report_progress(1.0, "segmentation")
        return result



def role_request(params: Mapping[str, str], image: tensor_pb2.Image,
                 count: int) -> segmentation_pb2.ChannelRoles:
    """The SegmentCells ``roles`` of a job's ``nucleus_channel``, ``cytoplasm_channels`` and
    ``expand_um`` for its image of ``count`` channels as read (names from the file's header).

    Raises
    ------
    InvalidArgument
        Naming the parameter: a channel the image does not have, or expand_um with cytoplasm
        channels.
    """
    names = channel_names_as_read(image, "input.image", count)
    nucleus: ChannelChoice = parse_channel_choice(params["nucleus_channel"])  # type: ignore[assignment]
    cytoplasm = parse_cytoplasm_choices(params.get("cytoplasm_channels", ""))
    expand = parse_expand(params.get("expand_um", "0"))
    if cytoplasm and expand:
        raise InvalidArgument("params.expand_um: cells grow by a distance only without "
                              "params.cytoplasm_channels; with them they follow the cytoplasm")
    return segmentation_pb2.ChannelRoles(
        nucleus=resolve_channel(nucleus, names, "params.nucleus_channel"),
        cytoplasm=[resolve_channel(choice, names, "params.cytoplasm_channels")
                   for choice in cytoplasm],
        channel_names=names, expand_um=expand,
    )
