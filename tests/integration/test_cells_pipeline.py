"""The ``cells`` pipeline and SegmentCells through real gRPC servers and Redis: generated
4-channel images of touching cells, label masks, the cells table, TIFF downloads, HPA folders."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from labsight.cli import main
from labsight.client import build_request
from labsight.columns import cell_column_names
from labsight.images import encode_png, image_from_array
from labsight.pixel_size import tiff_pixel_size
from labsight.result import Result
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import segmentation_pb2, segmentation_pb2_grpc, tensor_pb2

from .conftest import InProcessStack

CHANNELS = ("red", "green", "blue", "yellow")
GRID = 3
SIDE = 64
"""Cells sit on a GRID x GRID grid of SIDE-pixel squares, touching their neighbours."""
PIXEL_SIZE = "0.5"
"""µm per pixel of the generated images: nuclei of 10 µm (20 px), cells of ~30 µm."""


def cells_image(dtype: type = np.uint16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (H, W, 4) image of GRID² touching cells with round nuclei, uneven brightness and
    noise, and the true cell labels (1..GRID², row by row)."""
    rng = np.random.default_rng(seed)
    size = GRID * SIDE
    rows, cols = np.indices((size, size))
    centres = [(SIDE // 2 + SIDE * i + rng.integers(-5, 6), SIDE // 2 + SIDE * j + rng.integers(-5, 6))
               for i in range(GRID) for j in range(GRID)]
    distances = np.stack([np.hypot(rows - r, cols - c) for r, c in centres])
    nearest = distances.argmin(axis=0)
    cells = np.where(distances.min(axis=0) < 42, nearest + 1, 0).astype(np.int32)
    nuclei = np.where(distances.min(axis=0) < 10, nearest + 1, 0)
    shading = 0.6 + 0.4 * cols / size  # uneven illumination, left to right
    cytoplasm = ndimage.gaussian_filter((cells > 0) * 1.0, 1.5) * (0.6 + 0.1 * (cells % 3))
    image = np.stack([
        cytoplasm * shading,
        ndimage.gaussian_filter((cells > 0) * (0.1 + 0.05 * cells), 1.0),
        ndimage.gaussian_filter((nuclei > 0) * 1.0, 1.5) * shading,
        cytoplasm * 0.8 * shading,
    ], axis=-1) + rng.normal(0, 0.02, (size, size, 4))
    top = np.iinfo(dtype).max
    return (np.clip(image, 0, 1) * top).astype(dtype), cells


def _tiff(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "CYX"})
    return buffer.getvalue()


def _encoded(data: bytes) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data))


def _done(stack: InProcessStack, job_id: str) -> Result:
    job = stack.client.wait(job_id, timeout_s=300)
    assert job.status == pb.JOB_STATUS_DONE, job.error
    return Result(stack.client.result(job_id))


def _refusal(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(*args, **kwargs)  # type: ignore[operator]
    return error.value


def _check_cells(result: Result, truth: np.ndarray) -> None:
    """Masks of the image's shape, GRID² cells each sharing its id with its nucleus inside it,
    each matching a true cell, and a table that measures exactly these masks."""
    nuclei, cells = result.tensor("nucleus_labels"), result.tensor("cell_labels")
    assert nuclei.dtype == cells.dtype == np.uint16  # int32 only beyond 65535 labels
    assert nuclei.shape == cells.shape == truth.shape
    cell_ids = np.unique(cells[cells > 0])
    assert len(cell_ids) == GRID * GRID
    assert set(np.unique(nuclei[nuclei > 0])) == set(cell_ids)
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # each nucleus inside its own cell
    for label in cell_ids:  # one-to-one with the true cells, IoU > 0.5
        mine = cells == label
        true = truth == np.bincount(truth[mine]).argmax()
        assert (mine & true).sum() / (mine | true).sum() > 0.5
    table = result.to_pandas("cells")
    assert list(table.columns) == cell_column_names()
    assert table.index.tolist() == [str(label) for label in cell_ids]
    assert table["area_px"].tolist() == [int((cells == label).sum()) for label in cell_ids]
    assert table["nucleus_area_px"].tolist() == [int((nuclei == label).sum()) for label in cell_ids]
    assert np.allclose(table["area_um2"], table["area_px"] * float(PIXEL_SIZE) ** 2)
    assert result.scalars["cell_count"] == len(cell_ids)
    assert result.tensor("coordinates").shape == (len(cell_ids), 2)


def test_a_4_channel_tiff_gives_shared_ids_a_table_and_tiff_masks(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    image, truth = cells_image(np.uint16)
    job = stack.client.submit("cells", _encoded(_tiff(image)), {"pixel_size_um": PIXEL_SIZE},
                              name="plate/A1.tif")
    result = _done(stack, job.job_id)
    _check_cells(result, truth)
    assert result.provenance["segmentation_method"]
    assert result.provenance["pixel_size_um"] == PIXEL_SIZE
    # mean green follows the generated per-cell protein level (rises with the true label)
    table = result.to_pandas("cells")
    true_label = [np.bincount(truth[result.tensor("cell_labels") == int(i)]).argmax() for i in table.index]
    assert np.all(np.diff(table["mean_green"].to_numpy()[np.argsort(true_label)]) > 0)

    masks = tmp_path / "masks"
    assert main(["results", job.job_id, "--gateway", stack.gateway.address, "--token", "",
                 "--masks", str(masks)]) == 0
    assert "wrote" in capsys.readouterr().err
    for kind, tensor in (("nuclei", "nucleus_labels"), ("cells", "cell_labels")):
        written = tifffile.imread(masks / "plate" / f"A1_{kind}.tif")
        assert written.dtype == np.int32
        assert np.array_equal(written, result.tensor(tensor))
        with tifffile.TiffFile(masks / "plate" / f"A1_{kind}.tif") as tif:  # calibrated, as read back
            stated = tiff_pixel_size(tif)
        assert stated is not None and stated.um == pytest.approx(float(PIXEL_SIZE))
    assert Result(result.message).write_masks(tmp_path / "sdk", "x") == [
        tmp_path / "sdk" / "x_nuclei.tif", tmp_path / "sdk" / "x_cells.tif"]

    tiff = tmp_path / "A1.tif"
    tiff.write_bytes(_tiff(image))
    figure = tmp_path / "A1.svg"
    assert main(["plot", job.job_id, "--gateway", stack.gateway.address, "--token", "",
                 "--image", str(tiff), "--ids", "-o", str(figure)]) == 0
    assert "masks plot of 1 result" in capsys.readouterr().err
    svg = figure.read_text()
    assert f"{GRID * GRID} cells (nuclei darker)" in svg and "outlines over the channels" in svg
    assert svg.count("10 µm") == 2  # a scale bar per panel: 192 px at 0.5 µm


def test_a_batch_exports_its_masks_table_and_plot_as_its_results_stream_in(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    image, _ = cells_image(np.uint16)
    names = ["plate/A1.tif", "plate/B1.tif", "plate/A1.png"]  # A1 twice: the job ids tell them apart
    batch = stack.client.submit_batch(
        [build_request("cells", _encoded(_tiff(image)), {"pixel_size_um": PIXEL_SIZE}, name=name)
         for name in names], batch_id="plate-cells")
    results = [_done(stack, job_id) for job_id in batch.job_ids]
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    masks, table = tmp_path / "masks", tmp_path / "cells.csv"
    assert main(["results", "--batch", "plate-cells", *gateway, "--masks", str(masks),
                 "-o", str(table)]) == 0
    first, second = batch.job_ids[0], batch.job_ids[2]
    assert sorted(p.relative_to(masks).as_posix() for p in masks.rglob("*.tif")) == sorted(
        f"plate/{stem}_{kind}.tif" for stem in (f"A1_{first}", "B1", f"A1_{second}")
        for kind in ("nuclei", "cells"))
    assert np.array_equal(tifffile.imread(masks / "plate" / f"A1_{second}_cells.tif"),
                          results[2].tensor("cell_labels"))
    frame = pd.read_csv(table)
    assert len(frame) == sum(len(r.to_pandas("cells")) for r in results)
    assert sorted({row_id.split("/")[1] for row_id in frame["id"]}) == ["A1.png", "A1.tif", "B1.tif"]
    figure = tmp_path / "plate.png"
    assert main(["plot", "--batch", "plate-cells", *gateway, "-o", str(figure)]) == 0
    assert "embedding plot of 3 results" in capsys.readouterr().err


def test_8_and_16_bit_channels_give_the_same_cells(stack: InProcessStack) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    image, truth = cells_image(np.uint8)
    answers = [
        stub.SegmentCells(segmentation_pb2.SegmentCellsRequest(
            image=image_from_array(pixels), pixel_size_um=float(PIXEL_SIZE)), timeout=120)
        for pixels in (image, image.astype(np.uint16) * 257)
    ]
    eight, sixteen = (from_tensor(a.cell_labels, "cell_labels") for a in answers)
    assert np.array_equal(eight, sixteen)
    assert len(np.unique(eight[eight > 0])) == GRID * GRID
    assert answers[0].method and answers[0].model
    # intensities are measured in each image's own units
    mean_blue = [table_values(a.cells)[:, list(a.cells.columns).index("mean_blue")] for a in answers]
    assert np.allclose(mean_blue[1], mean_blue[0] * 257)


def test_hpa_files_are_one_job_per_id_and_flags_name_one(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    folder = tmp_path / "hpa"
    folder.mkdir()
    truths = {}
    for seed, image_id in enumerate(("10_A1_1", "10_B2_3")):
        image, truths[image_id] = cells_image(np.uint8, seed)
        for index, channel in enumerate(CHANNELS):
            Image.fromarray(image[..., index]).save(folder / f"{image_id}_{channel}.png")
    gateway = ["--gateway", stack.gateway.address, "--token", "", "--json"]
    assert main(["submit", "cells", str(folder), "--param", f"pixel_size_um={PIXEL_SIZE}",
                 "--wait", *gateway]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["input_name"] for line in lines) == ["10_A1_1", "10_B2_3"]
    for line in lines:
        assert line["status"] == "done"
        _check_cells(Result(stack.client.result(line["job_id"])), truths[line["input_name"]])

    flags = [f"--{channel}={folder / f'10_A1_1_{channel}.png'}" for channel in CHANNELS]
    assert main(["submit", "cells", *flags, "--param", f"pixel_size_um={PIXEL_SIZE}", *gateway]) == 0
    (again,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again["input_name"] == "10_A1_1"
    assert again["job_id"] in [line["job_id"] for line in lines]  # the same files: the same job

    sdk = stack.client.run("cells", tensor_pb2.Image(name="sdk"), {"pixel_size_um": PIXEL_SIZE},
                           images={c: folder / f"10_B2_3_{c}.png" for c in CHANNELS})
    assert sdk.input_name == "sdk"
    assert np.array_equal(sdk.label_masks()["cells"], sdk.tensor("cell_labels"))
    assert sdk.label_masks()["cells"].dtype == np.int32  # the SDK's masks stay int32 (uint16 sent)
    _check_cells(sdk, truths["10_B2_3"])

    (folder / "10_B2_3_yellow.png").unlink()
    assert main(["submit", "cells", str(folder), *gateway]) == 2
    assert "10_B2_3: no 10_B2_3_yellow file" in capsys.readouterr().err


@pytest.mark.parametrize(("inputs", "params", "field", "message"), [
    ({"image": np.zeros((32, 32, 3), np.uint8)}, {}, "input.image", "3 channel(s); cells need 4"),
    ({"red": (32, 32), "green": (32, 32), "blue": (30, 32), "yellow": (32, 32)}, {},
     "input.images[blue]", "30x32 pixels, but input.images[red] is 32x32"),
    ({"red": (32, 32), "green": (32, 32), "blue": (32, 32)}, {}, "input.images",
     "no image for channel(s) yellow"),
    ({"image": np.zeros((32, 32, 4), np.uint8)}, {"method": "magic"}, "params.method",
     "expected one of"),
    ({"image": np.zeros((32, 32, 4), np.uint8)}, {"pixel_size_um": "0"}, "params.pixel_size_um",
     "> 0"),
])
def test_bad_inputs_are_refused_at_submit_naming_the_field(
    stack: InProcessStack, inputs: dict[str, object], params: dict[str, str], field: str,
    message: str,
) -> None:
    if "image" in inputs:
        request = build_request("cells", inputs["image"], params)  # type: ignore[arg-type]
    else:
        request = build_request("cells", tensor_pb2.Image(name="x"), params, images={
            channel: _encoded(encode_png(np.zeros(shape, np.uint8)))  # type: ignore[call-overload]
            for channel, shape in inputs.items()})
    error = _refusal(stack.client.submit_request, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}:" in error.details() and message in error.details()
    assert stack.client.list_jobs() == []


def test_an_image_over_the_limit_is_refused_from_its_header(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_IMAGE_BYTES", str(100_000))
    # 4 x 200 x 200 bytes = 160 kB decoded, from a few kB of PNGs
    request = build_request("cells", tensor_pb2.Image(name="big"), images={
        channel: _encoded(encode_png(np.zeros((200, 200), np.uint8))) for channel in CHANNELS})
    error = _refusal(stack.client.submit_request, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.images: 4 channels of 200x200 uint8 take 160000 bytes" in error.details()
    assert "LABSIGHT_MAX_IMAGE_BYTES" in error.details()


def test_an_all_zero_image_is_an_empty_valid_result(stack: InProcessStack) -> None:
    stack.start_worker()
    job = stack.client.submit("cells", np.zeros((48, 64, 4), np.uint16))
    result = _done(stack, job.job_id)
    for name in ("nucleus_labels", "cell_labels"):
        mask = result.tensor(name)
        assert mask.shape == (48, 64) and mask.dtype == np.uint16 and not mask.any()
    assert result.to_pandas("cells").shape == (0, len(cell_column_names()))
    assert result.scalars["cell_count"] == 0


def test_segment_cells_names_the_bad_field(stack: InProcessStack) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    grey = image_from_array(np.zeros((16, 16), np.uint8))
    cases = {
        "image, channel_images: give exactly one": segmentation_pb2.SegmentCellsRequest(),
        "channel_images: 3 images; expected one per channel":
            segmentation_pb2.SegmentCellsRequest(channel_images=[grey] * 3),
        "channel_images[3]: 8x16 pixels, but channel_images[0] is 16x16":
            segmentation_pb2.SegmentCellsRequest(
                channel_images=[grey] * 3 + [image_from_array(np.zeros((8, 16), np.uint8))]),
        "channel_images[1]: dtype uint16, but channel_images[0] is uint8":
            segmentation_pb2.SegmentCellsRequest(
                channel_images=[grey, image_from_array(np.zeros((16, 16), np.uint16)), grey, grey]),
        "method: unknown method 'magic'": segmentation_pb2.SegmentCellsRequest(
            image=image_from_array(np.zeros((16, 16, 4), np.uint8)), method="magic"),
        "pixel_size_um: must be a positive number": segmentation_pb2.SegmentCellsRequest(
            image=image_from_array(np.zeros((16, 16, 4), np.uint8)), pixel_size_um=-1),
    }
    for message, request in cases.items():
        error = _refusal(stub.SegmentCells, request, timeout=30)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.details()


def test_the_gateway_checks_the_methods_and_default_of_the_service() -> None:
    from labsight.cell_images import CELL_METHODS
    from services.gateway.pipelines.cells import HPA_PIXEL_SIZE_UM
    from services.segmentation import cells

    assert CELL_METHODS == tuple(cells.CELL_METHODS)
    assert float(HPA_PIXEL_SIZE_UM) == cells.DEFAULT_PIXEL_SIZE_UM


def test_the_hpa_method_without_its_weights_is_a_failed_precondition(stack: InProcessStack) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    request = segmentation_pb2.SegmentCellsRequest(
        image=image_from_array(np.zeros((16, 16, 4), np.uint8)), method="hpa")
    error = _refusal(stub.SegmentCells, request, timeout=30)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hpa-nuclei, hpa-cell" in error.details() and "convert-hpa-weights" in error.details()


def _ome_tiff(image: np.ndarray, pixel_size_um: float) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(image, -1, 0), ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": pixel_size_um, "PhysicalSizeY": pixel_size_um})
    return buffer.getvalue()


def test_the_pixel_size_a_file_states_is_used_unless_one_is_given(stack: InProcessStack) -> None:
    stack.start_worker()
    image, truth = cells_image(np.uint16)
    calibrated = stack.client.submit("cells", _encoded(_ome_tiff(image, float(PIXEL_SIZE))))
    contradicted = stack.client.submit("cells", _encoded(_ome_tiff(image, float(PIXEL_SIZE))),
                                       {"pixel_size_um": "0.45"})
    uncalibrated = stack.client.submit("cells", _encoded(_tiff(image)))

    result = _done(stack, calibrated.job_id)
    _check_cells(result, truth)  # sizes and µm² areas at the file's 0.5 µm
    assert result.provenance["pixel_size_um"] == PIXEL_SIZE
    assert result.provenance["pixel_size_source"] == "file: OME PhysicalSizeX/Y"
    assert result.provenance["image_pixel_size"] == "0.5 µm (OME PhysicalSizeX/Y)"
    assert not [w for w in result.warnings if "pixel" in w]

    result = _done(stack, contradicted.job_id)
    assert result.provenance["pixel_size_um"] == "0.45"
    assert result.provenance["pixel_size_source"] == "params.pixel_size_um"
    assert ("params.pixel_size_um=0.45 but the image file states 0.5 µm (OME PhysicalSizeX/Y); "
            "sizes and areas use 0.45 µm") in result.warnings
    table = result.to_pandas("cells")
    assert np.allclose(table["area_um2"], table["area_px"] * 0.45 ** 2)

    result = _done(stack, uncalibrated.job_id)  # no calibration in the file: HPA's 0.08 µm
    assert result.provenance["pixel_size_um"] == "0.08"
    assert result.provenance["pixel_size_source"] == "default"
    assert result.scalars["cell_count"] == 0  # at 0.08 µm these 10 µm nuclei are 1.6 µm across
    assert ("no cells found at the default pixel size of 0.08 µm (HPA's 63× images; the image "
            "file states none): if the image is not at that scale, set params.pixel_size_um"
            ) in result.warnings


def _imagej_channels(image: np.ndarray, pixel_sizes_um: list[float]) -> list[tensor_pb2.Image]:
    """One calibrated ImageJ file per channel, as Fiji saves them."""
    files = []
    for channel, size in enumerate(pixel_sizes_um):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image[..., channel], imagej=True, metadata={"unit": "micron"},
                         resolution=(1 / size, 1 / size))
        files.append(_encoded(buffer.getvalue()))
    return files


def test_channel_files_give_their_pixel_size_and_a_warning_where_they_disagree(
    stack: InProcessStack
) -> None:
    stack.start_worker()
    image, truth = cells_image(np.uint16)
    sizes = [float(PIXEL_SIZE)] * 3 + [0.6]  # the yellow file calibrated otherwise
    job = stack.client.submit("cells", tensor_pb2.Image(name="x"), images=dict(
        zip(CHANNELS, _imagej_channels(image, sizes), strict=True)))
    result = _done(stack, job.job_id)
    _check_cells(result, truth)
    assert result.provenance["pixel_size_source"] == "file: ImageJ calibration"
    assert ("input.images[yellow] states pixels of 0.6 µm (ImageJ calibration), input.images[red] "
            "0.5 µm (ImageJ calibration); the first is used") in result.warnings


def test_segment_cells_reads_the_pixel_size_of_its_files_when_given_none(stack: InProcessStack) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    image, truth = cells_image(np.uint16)
    calibrated = _imagej_channels(image, [float(PIXEL_SIZE)] * 4)
    answer = stub.SegmentCells(segmentation_pb2.SegmentCellsRequest(channel_images=calibrated),
                               timeout=120)
    assert answer.pixel_size_um == float(PIXEL_SIZE)
    labels = from_tensor(answer.cell_labels, "cell_labels")
    assert len(np.unique(labels[labels > 0])) == GRID * GRID
    given = stub.SegmentCells(segmentation_pb2.SegmentCellsRequest(
        channel_images=calibrated, pixel_size_um=0.45), timeout=120)
    assert math.isclose(given.pixel_size_um, 0.45, rel_tol=1e-6)
    pixels = stub.SegmentCells(segmentation_pb2.SegmentCellsRequest(image=image_from_array(image)),
                               timeout=120)
    assert math.isclose(pixels.pixel_size_um, 0.08, rel_tol=1e-6)  # a tensor states no size
