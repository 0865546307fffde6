"""A model service reads a big image file sent as EncodedImage from the request's wire bytes: the
file's bytes are detached at parse and read in place, never copied out whole, however often the
service opens the image (SegmentCells opens it for its header, then to decode it), and the answer
is the one its pixels as a tensor get."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import tifffile

import labsight.images
from labsight.catalog import SEGMENTATION
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.tensor_wire import DETACH_MIN_BYTES, TOKEN_BYTES, TOKEN_MAGIC
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc
from labsight.v1 import tensor_pb2
from services.segmentation.servicer import register

from .test_cells_pipeline import PIXEL_SIZE, cells_image


def test_segment_cells_reads_a_big_tiff_off_the_wire_in_place(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, _ = cells_image(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(image, -1, 0), ome=True, metadata={"axes": "CYX"})
    assert len(buffer.getvalue()) > DETACH_MIN_BYTES
    opened: list[bool] = []  # per opening of the file: whether it came as a token
    streams: list[type] = []  # per opening: the file object the decoder read
    resolve, buffer_file = labsight.images.resolve_detached, labsight.images.BufferFile

    def resolving(data: bytes) -> bytes | memoryview:
        opened.append(len(data) == TOKEN_BYTES and data.startswith(TOKEN_MAGIC))
        return resolve(data)

    def reading(data: memoryview) -> io.RawIOBase:
        streams.append(type(data))
        return buffer_file(data)

    monkeypatch.setattr(labsight.images, "resolve_detached", resolving)
    monkeypatch.setattr(labsight.images, "BufferFile", reading)
    server = serve(register, SEGMENTATION.grpc_services, settings)
    with grpc.insecure_channel(server.address, options=settings.grpc_options()) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        from_file = stub.SegmentCells(pb.SegmentCellsRequest(
            image=tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue())),
            pixel_size_um=float(PIXEL_SIZE), method="classical"), timeout=60)
        from_pixels = stub.SegmentCells(pb.SegmentCellsRequest(
            image=image_from_array(image), pixel_size_um=float(PIXEL_SIZE), method="classical"),
            timeout=60)
    assert len(opened) >= 2 and all(opened)
    assert streams == [memoryview] * len(opened)  # every opening read the received bytes in place
    assert from_file.cell_labels.data == from_pixels.cell_labels.data
    assert from_file.nucleus_labels.data == from_pixels.nucleus_labels.data
    assert from_file.cells == from_pixels.cells
