"""SegmentCells' model-free method computes one call at a time in a process (two at once only
contended for the GIL); calls of the model methods overlap, so their tiles can share batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from labsight.catalog import SEGMENTATION
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc
from services.segmentation import servicer as segmentation_servicer
from services.segmentation.servicer import MODEL_FREE_METHODS, register

from .test_cells_pipeline import PIXEL_SIZE, cells_image


def test_classical_calls_take_turns_and_model_calls_overlap(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MODEL_FREE_METHODS == {"classical"}
    running, most = 0, {"classical": 0, "flows": 0}
    count = threading.Lock()
    segment = segmentation_servicer.segment_cells

    def timed(*channels: np.ndarray, method: str, **options: object) -> tuple[np.ndarray, np.ndarray]:
        """The classical segmentation for either method (no model loads), held 0.3 s so that
        calls at once overlap; records how many run together per method."""
        nonlocal running
        with count:
            running += 1
            most[method] = max(most[method], running)
        try:
            time.sleep(0.3)
            return segment(*channels, method="classical", **options)
        finally:
            with count:
                running -= 1

    monkeypatch.setattr(segmentation_servicer, "segment_cells", timed)
    server = serve(register, SEGMENTATION.grpc_services, settings)
    image, _ = cells_image(np.uint8)
    with grpc.insecure_channel(server.address, options=settings.grpc_options()) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)

        def call(method: str) -> pb.SegmentCellsResponse:
            return stub.SegmentCells(pb.SegmentCellsRequest(
                image=image_from_array(image), pixel_size_um=float(PIXEL_SIZE), method=method),
                timeout=60)

        with ThreadPoolExecutor(3) as pool:
            classical = list(pool.map(call, ["classical"] * 3))
            flows = list(pool.map(call, ["flows"] * 3))
    assert most == {"classical": 1, "flows": 3}
    assert all(answer.method == "classical" and answer.cells.columns for answer in classical)
    assert [answer.cell_labels.data for answer in flows] == [classical[0].cell_labels.data] * 3
