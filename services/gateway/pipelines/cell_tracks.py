"""The ``cell-tracks`` pipeline: the cells of every time point of a time-lapse, followed over time.

One job per movie, as DeepCell Kiosk's tracking jobs take one: the worker reads each time point
(the T axis of the job's file; other stack axes as the ``plane`` and ``z_project`` parameters
choose), sends it to SegmentationService.SegmentCells as the ``cells`` pipeline does, and links
the time points' cells into tracks with :func:`labsight.tracking.link_frames`. Movies too big
for one answer go one job per time point (``labsight submit cells --each-plane t``) and are
linked in the client (``labsight track --batch``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from labsight.columns import LINEAGE_COLUMNS, TRACK_COLUMNS
from labsight.config import answer_room
from labsight.errors import InvalidArgument, echo
from labsight.image_reader import parse_plane
from labsight.images import ImageInfo, image_info, read_image, series_layout
from labsight.pixel_size import choose_pixel_size
from labsight.tables import feature_table, table_values
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.tensors import from_tensor, to_tensor
from labsight.time_lapse import LINKED_MASKS
from labsight.tracking import Tracks, link_frames
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import segmentation_pb2, tensor_pb2
from services.gateway.pipelines.base import (
    Parameter,
    RunContext,
    main_image_info,
    parse_micrometres,
)
from services.gateway.pipelines.cells import (
    CELL_PARAMETERS,
    HPA_PIXEL_SIZE_UM,
    ROLE_PARAMETERS,
    CellsPipeline,
    role_request,
)

TRACK_LABEL_BYTES = 4
"""Bytes per pixel per time point of the answer's ``track_labels`` at most (int32)."""


def parse_objects(text: str) -> str:
    """``cells`` or ``nuclei``; ValueError otherwise."""
    if text not in LINKED_MASKS:
        raise ValueError(f"expected one of {sorted(LINKED_MASKS)}, got {echo(text)}")
    return text


def parse_min_iou(text: str) -> float:
    """A fraction in (0, 1]; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number in (0, 1], got {echo(text)}") from None
    if not 0 < value <= 1:  # NaN fails too
        raise ValueError(f"expected a number in (0, 1], got {echo(text)}")
    return value


def parse_distance(text: str) -> float:
    """0 (never) or a length in micrometres; ValueError otherwise."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    value = parse_micrometres(text)
    if value is None:
        raise ValueError("expected a number of micrometres (0: never)")
    return value


class CellTracksPipeline(CellsPipeline):
    """SegmentCells on each time point of the job's movie, then the cells linked into tracks."""

    name = "cell-tracks"
    description = (
        "Cells followed through a time-lapse: one TIFF with a time axis (T), each time point "
        "segmented as the cells pipeline does (HPA's 4 channels, or any channels by "
        "params.nucleus_channel), then linked: cells of consecutive time points paired by "
        "overlap, divisions found, cells that jumped paired by distance. Result: table 'tracks' "
        "(one row per cell per time point: t, track_id, parent_track_id, then the cells "
        "table's columns), table 'lineage' (per track: first_t, last_t, parent_track_id, as "
        "the Cell Tracking Challenge's res_track.txt), tensor 'track_labels' (T, H, W) uint16 "
        "(int32 beyond 65535 tracks), each linked object's pixels holding its track id. "
        "`labsight track JOB_ID --ctc DIR` writes them in the Challenge's layout."
    )
    parameters = (
        *CELL_PARAMETERS, *ROLE_PARAMETERS,
        Parameter("objects", "What is linked: the cells' masks or their nuclei's (steadier where "
                  "cells touch and change shape).", "cells", parse_objects),
        Parameter("min_iou", "Overlapping objects of consecutive time points pair at this "
                  "intersection over union or more.", "0.1", parse_min_iou),
        Parameter("max_distance_um", "Objects that overlap no partner pair by centroid distance "
                  "up to this many µm (0: never).", "10", parse_distance),
    )

    def sends_read_pixels(self, job_input: pb.JobInput) -> bool:
        """No: each time point is read and sent in turn."""
        return False

    def validate(self, params: Mapping[str, str], job_input: pb.JobInput) -> dict[str, str]:
        """As every pipeline, with the file's headers read at its first time point (the
        ``plane`` parameter names the other stack axes only)."""
        plane = params.get("plane", "")
        try:
            chosen = parse_plane(plane)
        except ValueError:
            chosen = ()  # refused with its message by the parameter's own check
        if any(axis == "T" for axis, _ in chosen):
            raise InvalidArgument("params.plane: the time axis is the movie's; choose other "
                                  "stack axes only (e.g. z=3)")
        image = job_input.image
        if image.WhichOneof("source") not in ("encoded", "blob") or job_input.images:
            raise InvalidArgument("input.image: a time-lapse file (a TIFF with a T axis) is "
                                  "needed; one image per channel or a pixel tensor has no time")
        time_points(image, params.get("series", ""))  # before the plane's check names the axis
        return super().validate({**params, "plane": with_time(plane, 0)}, job_input)

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """Time points that are cells images (as the cells pipeline checks them) whose track
        labels fit an answer (the file and its time axis were checked by ``validate``)."""
        count = time_points(job_input.image, job_input.image.read.series)
        super().check_input(params, job_input, info)
        frame = main_image_info(job_input, info)
        needed = count * frame.height * frame.width * TRACK_LABEL_BYTES
        if needed > answer_room():
            raise InvalidArgument(
                f"input.image: {count} time points of {frame.height}x{frame.width} give track "
                f"labels of {needed} bytes, over the {answer_room()} an answer may carry: submit "
                "one job per time point (labsight submit cells FILE --each-plane t) and link "
                "them with labsight track --batch")

    def run(self, context: RunContext) -> pb.JobResult:
        """SegmentCells on each time point in turn (progress per time point), then the link."""
        params = self.parsed(context.params)
        pixel_size = choose_pixel_size(
            params["pixel_size_um"], context.image_pixel_size,  # type: ignore[arg-type]
            HPA_PIXEL_SIZE_UM, "params.pixel_size_um")
        image = context.job_input.image
        roles = None
        if context.params.get("nucleus_channel"):
            roles = role_request(context.params, image, image_info(
                image, "input.image", choices_field="params").channels)
        count = time_points(image, image.read.series)
        mask_name = LINKED_MASKS[str(params["objects"])]
        masks, tables = [], []
        columns: list[str] = []
        method = model = ""
        for t in range(count):
            context.report_progress(t / count, "segmentation", t, count, "time points")
            answer = self._segment(context, image, t, pixel_size.um, str(params["method"]), roles)
            masks.append(from_tensor(getattr(answer, mask_name), mask_name))
            tables.append(table_values(answer.cells, "cells"))
            columns, method, model = list(answer.cells.columns), answer.method, answer.model
        context.report_progress(1.0, "linking")
        tracks = link_frames(masks, pixel_size_um=pixel_size.um,
                             min_iou=float(params["min_iou"]),  # type: ignore[arg-type]
                             max_distance_um=float(params["max_distance_um"]))  # type: ignore[arg-type]
        result = pb.JobResult(pipeline=self.name, provenance={
            "segmentation_method": method, "segmentation_model": model,
            "pixel_size_um": f"{pixel_size.um:.7g}", "pixel_size_source": pixel_size.source,
            "linked_objects": str(params["objects"]), "time_points": str(count),
        })
        result.warnings.extend(pixel_size.warnings)
        _fill(result, tracks, masks, tables, columns)
        return result

    def _segment(self, context: RunContext, image: tensor_pb2.Image, t: int, pixel_size_um: float,
                 method: str, roles: segmentation_pb2.ChannelRoles | None
                 ) -> segmentation_pb2.SegmentCellsResponse:
        """SegmentCells on time point ``t``, read here and sent as pixels (the movie's file is
        not sent once per time point)."""
        frame = tensor_pb2.Image()
        frame.CopyFrom(image)
        frame.read.plane = with_time(image.read.plane, t)
        pixels = read_image(frame, "input.image", choices_field="params", warn=False).pixels
        request = segmentation_pb2.SegmentCellsRequest(method=method, pixel_size_um=pixel_size_um)
        if roles is not None:
            request.roles.CopyFrom(roles)
        request.image.name = f"{image.name}[t={t}]"
        answer: segmentation_pb2.SegmentCellsResponse = context.services.segmentation.SegmentCells(
            EncodedMessage(serialize_with_arrays(request, {"image.tensor": pixels})),
            timeout=context.services.call_timeout_s)
        return answer


def time_points(image: tensor_pb2.Image, series_text: str) -> int:
    """How many time points the image's file has (its T axis, in the image ``series_text``
    chooses, the first by default); InvalidArgument naming its axes where it has none."""
    layout = series_layout(image, "input.image", series_text)
    if "T" not in layout.axes:
        raise InvalidArgument(f"input.image: no time axis (T) in its axes {layout.describe()}; "
                              "cell-tracks takes a time-lapse (for one image, use cells)")
    return layout.size("T")


def with_time(plane: str, t: int) -> str:
    """The ``plane`` choice with the time axis at ``t`` (any t= it had replaced)."""
    others = [part.strip() for part in plane.split(",")
              if part.strip() and not re.fullmatch(r"t\s*=.*", part.strip().lower())]
    return ",".join([*others, f"t={t}"])


def _fill(result: pb.JobResult, tracks: Tracks, masks: list[np.ndarray],
          tables: list[np.ndarray], columns: list[str]) -> None:
    """The tracks and lineage tables, the track labels and the counts, into ``result``."""
    label_at = columns.index("label") if columns else 0
    parents = {int(row[0]): int(row[3]) for row in tracks.lineage}
    rows, ids = [], []
    for t, values in enumerate(tables):
        track_of = dict(zip(tracks.labels[t].tolist(), tracks.track_ids[t].tolist(), strict=True))
        for row in values:
            track = track_of.get(int(row[label_at]), 0)  # 0: a cell whose nucleus was not linked
            rows.append([t, track, parents.get(track, 0), *row])
            ids.append(f"{t}/{int(row[label_at])}")
    names = [*TRACK_COLUMNS, *columns]
    result.tables["tracks"].CopyFrom(feature_table(
        names, np.array(rows, np.float64).reshape(len(rows), len(names)), ids))
    result.tables["lineage"].CopyFrom(feature_table(
        list(LINEAGE_COLUMNS), tracks.lineage[:, 1:].astype(np.float64),
        [str(int(track)) for track in tracks.lineage[:, 0]]))
    stack = np.stack([tracks.relabelled(t, mask) for t, mask in enumerate(masks)])
    result.tensors["track_labels"].CopyFrom(to_tensor(stack))
    result.scalars["track_count"] = float(len(tracks.lineage))
    result.scalars["division_count"] = float(tracks.divisions())
    result.scalars["time_points"] = float(len(masks))
