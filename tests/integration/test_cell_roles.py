"""The ``cells`` pipeline on images that are not HPA's four channels, through real gRPC servers
and Redis: a DAPI + protein + membrane OME-TIFF by channel names, a grey DAPI ImageJ file whose
nuclei grow into cells, the refusals, and SegmentCells' ``roles``."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from skimage.segmentation import expand_labels

from labsight.cli import main
from labsight.columns import cell_column_names
from labsight.images import image_from_array
from labsight.tensors import from_tensor
from labsight.v1 import segmentation_pb2, segmentation_pb2_grpc, tensor_pb2

from .conftest import InProcessStack
from .test_cells_pipeline import GRID, PIXEL_SIZE, _done, _encoded, _refusal, _tiff, cells_image

OME_NAMES = ["DAPI", "GFP", "CellMask"]


def _lab_image(image: np.ndarray) -> np.ndarray:
    """The generated HPA image as a lab's 3 channels: DAPI (blue), GFP (green), CellMask (red)."""
    return image[..., [2, 1, 0]]


def _ome(channels_last: np.ndarray, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(channels_last, -1, 0), ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": names},
        "PhysicalSizeX": float(PIXEL_SIZE), "PhysicalSizeY": float(PIXEL_SIZE)})
    return buffer.getvalue()


def test_channels_named_by_role_give_hpa_s_cells_measured_under_their_names(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    image, truth = cells_image(np.uint16)
    lab = _lab_image(image)
    job = stack.client.submit("cells", _encoded(_ome(lab, OME_NAMES)), {
        "nucleus_channel": "DAPI", "cytoplasm_channels": "cellmask"}, name="well.ome.tif")
    # HPA's layout with the membrane stain as both red and yellow: the same segmentation
    hpa = stack.client.submit("cells", _encoded(_tiff(image[..., [0, 1, 2, 0]])),
                              {"pixel_size_um": PIXEL_SIZE})
    result, reference = _done(stack, job.job_id), _done(stack, hpa.job_id)
    cells, nuclei = result.tensor("cell_labels"), result.tensor("nucleus_labels")
    assert np.array_equal(cells, reference.tensor("cell_labels"))
    assert np.array_equal(nuclei, reference.tensor("nucleus_labels"))
    ids = np.unique(cells[cells > 0])
    assert len(ids) == GRID * GRID
    assert result.provenance["pixel_size_source"] == "file: OME PhysicalSizeX/Y"

    table = result.to_pandas("cells")
    assert list(table.columns) == cell_column_names(("dapi", "gfp", "cellmask"))
    for index, name in enumerate(("dapi", "gfp", "cellmask")):
        plane = lab[..., index].astype(np.float64)
        assert np.allclose(table[f"mean_{name}"], [plane[cells == i].mean() for i in ids])
        assert np.allclose(table[f"nucleus_mean_{name}"], [plane[nuclei == i].mean() for i in ids])
        assert np.allclose(table[f"cytoplasm_mean_{name}"],
                           [plane[(cells == i) & (nuclei != i)].mean() for i in ids])
    assert np.allclose(table["mean_gfp"], reference.to_pandas("cells")["mean_green"])

    lab_file = tmp_path / "well.ome.tif"
    lab_file.write_bytes(_ome(lab, OME_NAMES))
    figure = tmp_path / "well.svg"
    assert main(["plot", job.job_id, "--gateway", stack.gateway.address, "--token", "",
                 "--image", str(lab_file), "-o", str(figure)]) == 0
    assert "masks plot of 1 result" in capsys.readouterr().err
    assert "outlines over the channels" in figure.read_text()


def test_a_grey_nuclear_image_grows_its_nuclei_into_cells(stack: InProcessStack) -> None:
    stack.start_worker()
    image, _ = cells_image(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image[..., 2], imagej=True, metadata={"unit": "micron"},
                     resolution=(1 / float(PIXEL_SIZE), 1 / float(PIXEL_SIZE)))
    grown = stack.client.submit("cells", _encoded(buffer.getvalue()),
                                {"nucleus_channel": "0", "expand_um": "4"})
    bare = stack.client.submit("cells", _encoded(buffer.getvalue()), {"nucleus_channel": "0"})
    result = _done(stack, grown.job_id)
    nuclei, cells = result.tensor("nucleus_labels"), result.tensor("cell_labels")
    assert len(np.unique(nuclei[nuclei > 0])) == GRID * GRID
    assert np.array_equal(cells, expand_labels(nuclei, distance=8.0))  # 4 µm at 0.5 µm
    table = result.to_pandas("cells")
    assert list(table.columns) == cell_column_names(("ch0",))
    # the ring round each nucleus is dimmer than the nucleus in the nuclear stain
    assert np.all(table["nucleus_mean_ch0"] > 3 * table["cytoplasm_mean_ch0"])
    assert np.array_equal(_done(stack, bare.job_id).tensor("cell_labels"), nuclei)


def test_roles_that_do_not_fit_are_refused_at_submit_naming_the_parameter(
    stack: InProcessStack
) -> None:
    image, _ = cells_image(np.uint8)
    lab = _encoded(_ome(_lab_image(image), OME_NAMES))
    cases = [
        ({"nucleus_channel": "Hoechst"}, "params.nucleus_channel: no channel named 'Hoechst'; "
         "the image's channels as read are 0 DAPI, 1 GFP, 2 CellMask"),
        ({"nucleus_channel": "3"}, "params.nucleus_channel: channel 3, but the image has 3"),
        ({"nucleus_channel": "0,1"}, "params.nucleus_channel: expected one channel"),
        ({"nucleus_channel": "DAPI", "cytoplasm_channels": "0,1,2"},
         "params.cytoplasm_channels: expected at most 2 channels"),
        ({"nucleus_channel": "DAPI", "cytoplasm_channels": "CellMask", "expand_um": "2"},
         "params.expand_um: cells grow by a distance only without"),
        ({"nucleus_channel": "DAPI", "expand_um": "500"}, "params.expand_um: expected 0 to 100"),
        ({"expand_um": "2"}, "only with params.nucleus_channel"),
        # channels picked first: the roles name channels as read
        ({"channels": "GFP,CellMask", "nucleus_channel": "DAPI"},
         "no channel named 'DAPI'; the image's channels as read are 0 GFP, 1 CellMask"),
    ]
    for params, message in cases:
        error = _refusal(stack.client.submit, "cells", lab, params)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, params
        assert message in error.details(), error.details()
    error = _refusal(stack.client.submit, "hpa-cells", lab, {"nucleus_channel": "DAPI"})
    assert "unknown parameter(s) 'nucleus_channel'" in error.details()
    grey = image_from_array(np.zeros((16, 16), np.uint8))
    error = _refusal(stack.client.submit, "cells", tensor_pb2.Image(name="x"),
                     {"nucleus_channel": "0"}, images={c: grey for c in ("red", "green", "blue",
                                                                       "yellow")})
    assert "params.nucleus_channel: names a channel of one image" in error.details()


def test_segment_cells_roles_are_checked_against_the_image(stack: InProcessStack) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    image, _ = cells_image(np.uint16)
    lab = image_from_array(_lab_image(image))
    answer = stub.SegmentCells(segmentation_pb2.SegmentCellsRequest(
        image=lab, pixel_size_um=float(PIXEL_SIZE), method="classical",
        roles=segmentation_pb2.ChannelRoles(nucleus=0, expand_um=3.0,
                                            channel_names=["DAPI", "GFP", "CellMask"])), timeout=120)
    nuclei = from_tensor(answer.nucleus_labels, "nucleus_labels")
    assert np.array_equal(from_tensor(answer.cell_labels, "cell_labels"),
                          expand_labels(nuclei, distance=6.0))
    assert list(answer.cells.columns)[-1] == "cytoplasm_mean_cellmask"
    grey = image_from_array(np.zeros((16, 16), np.uint8))
    cases = {
        "roles.nucleus: channel 3, but the image has 3 channel(s)":
            segmentation_pb2.SegmentCellsRequest(image=lab, roles=segmentation_pb2.ChannelRoles(
                nucleus=3)),
        "roles.channel_names: 2 channel names for 3 channels":
            segmentation_pb2.SegmentCellsRequest(image=lab, roles=segmentation_pb2.ChannelRoles(
                nucleus=0, channel_names=["a", "b"])),
        "roles: name the channels of one image": segmentation_pb2.SegmentCellsRequest(
            channel_images=[grey] * 4, roles=segmentation_pb2.ChannelRoles(nucleus=0)),
    }
    for message, request in cases.items():
        error = _refusal(stub.SegmentCells, request, timeout=30)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.details(), error.details()


def test_the_gateway_s_role_limits_are_the_service_s() -> None:
    from labsight.channel_roles import MAX_CYTOPLASM_CHOICES
    from services.gateway.pipelines.cells import MAX_EXPAND_UM
    from services.segmentation import roles

    assert MAX_EXPAND_UM == roles.MAX_EXPAND_UM
    assert MAX_CYTOPLASM_CHOICES == roles.MAX_CYTOPLASM_CHANNELS
