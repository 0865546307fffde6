"""Microscope files through the gateway: stacks, channel-first TIFFs, 12-bit data, alpha, int32 masks.

Every file is written by tifffile with real ImageJ/OME metadata, submitted to
the in-process stack and, where the job runs, compared with what the same
pixels give as a plain image.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from labsight.cli import main
from labsight.images import image_from_array
from labsight.intensity import parse_intensity, scale_intensity
from labsight.tables import table_values
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.features.fractal import gliding_box
from tests.integration.conftest import InProcessStack

BOXES = {"box_sizes": "3-15"}


def _tiff(pixels: np.ndarray, **options: object) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()), name="t.tif")


def _png(pixels: np.ndarray) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()), name="p.png")


def _original_8bit(seed: int = 0) -> np.ndarray:
    """A textured 8-bit image: blobs plus noise, so every box side sees several masses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    blobs = 120 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    return np.clip(blobs + rng.normal(0, 20, (64, 64)), 0, 255).astype(np.uint8)


def _run(stack: InProcessStack, image: tensor_pb2.Image, params: dict[str, str]) -> tuple[pb.Job, object]:
    job = stack.client.submit("fractal", image, {**BOXES, **params})
    done = stack.client.wait(job.job_id, timeout_s=120)
    assert done.status == pb.JOB_STATUS_DONE, done.error
    return done, stack.client.result(job.job_id)


def _fractal_numbers(result: object) -> np.ndarray:
    return table_values(result.tables["fractal"], "fractal")  # type: ignore[attr-defined]


def _refused(stack: InProcessStack, image: tensor_pb2.Image, params: dict[str, str],
             pipeline: str = "fractal") -> str:
    queued = len(stack.client.list_jobs())
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit(pipeline, image, {**BOXES, **params} if pipeline == "fractal" else params)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(stack.client.list_jobs()) == queued
    return error.value.details()


def test_twelve_bit_data_with_bit_depth_12_gives_the_8_bit_originals_numbers(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    original = _original_8bit()
    twelve_bit = original.astype(np.uint16) * 16  # 0..4080 in a 16-bit file, as cameras write
    plain, plain_result = _run(stack, _png(original), {})
    scaled, scaled_result = _run(stack, _tiff(twelve_bit), {"intensity": "bit-depth:12"})
    np.testing.assert_array_equal(_fractal_numbers(scaled_result), _fractal_numbers(plain_result))
    assert scaled_result.scalars["fractal_dimension"] == plain_result.scalars["fractal_dimension"]
    assert list(scaled.warnings) == [] and list(plain.warnings) == []
    assert scaled_result.provenance["intensity"] == "bit-depth:12"
    assert scaled_result.provenance["intensity_range"] == "0-4095"
    assert plain_result.provenance["intensity"] == "full-range"


def test_twelve_bit_data_at_full_range_is_done_with_a_warning_naming_the_fix(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    twelve_bit = _original_8bit().astype(np.uint16) * 16
    job, result = _run(stack, _tiff(twelve_bit), {})
    assert len(job.warnings) == 1
    assert "under 1/16 of the uint16 range" in job.warnings[0]
    assert "params.intensity=bit-depth:12" in job.warnings[0]
    assert list(result.warnings) == list(job.warnings)  # type: ignore[attr-defined]
    # The warning is kept in the job record, so a later GetJob still has it.
    assert list(stack.client.get(job.job_id).warnings) == list(job.warnings)


def test_imagej_z_stack_is_refused_naming_its_axes_until_a_plane_or_projection_is_chosen(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    rng = np.random.default_rng(1)
    zcyx = rng.integers(0, 256, (5, 2, 64, 64), dtype=np.uint8)
    image = _tiff(zcyx, imagej=True, metadata={"axes": "ZCYX"})
    message = _refused(stack, image, {})
    assert "a stack with axes ZCYX [Z=5, C=2, Y=64, X=64]" in message
    assert "params.plane" in message and "params.z_project" in message
    assert "params.channels" in message
    _, chosen = _run(stack, image, {"plane": "z=3", "channels": "1"})
    _, expected = _run(stack, _png(zcyx[3, 1]), {})
    np.testing.assert_array_equal(_fractal_numbers(chosen), _fractal_numbers(expected))
    _, projected = _run(stack, image, {"z_project": "max", "channels": "0"})
    _, expected_max = _run(stack, _png(zcyx[:, 0].max(axis=0)), {})
    np.testing.assert_array_equal(_fractal_numbers(projected), _fractal_numbers(expected_max))
    assert projected.provenance["z_project"] == "max"  # type: ignore[attr-defined]
    assert projected.provenance["image_axes"] == "ZCYX [Z=5, C=2, Y=64, X=64]"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"plane": "z=9"}, "params.plane: Z=9 is beyond input.image's 5 depth planes (0-4)"),
        ({"plane": "t=0"}, "params.plane: input.image has no stack axis T"),
        ({"z_project": "max", "channels": "7"}, "params.channels: channel 7 is beyond"),
        ({"z_project": "median"}, "params.z_project: expected one of max, mean, sum"),
        ({"z_project": "max", "intensity": "gamma"}, "params.intensity: expected full-range"),
    ],
)
def test_choices_the_stack_does_not_have_are_refused_at_submit(
    stack: InProcessStack, params: dict[str, str], expected: str
) -> None:
    image = _tiff(np.zeros((5, 2, 64, 64), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
    assert expected in _refused(stack, image, params)


@pytest.mark.parametrize(
    "options",
    [
        {"imagej": True, "metadata": {"axes": "CYX"}},
        {"ome": True, "metadata": {"axes": "CYX"}},
        {"photometric": "minisblack", "planarconfig": "separate"},
    ],
    ids=["imagej", "ome", "planar"],
)
def test_channel_first_four_channel_tiff_is_read_as_four_channels(
    stack: InProcessStack, options: dict[str, object]
) -> None:
    stack.start_worker()
    cyx = np.random.default_rng(2).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    image = _tiff(cyx, **options)
    assert "input.image: 4 channels; fractal features take grey (1) or RGB (3)" in _refused(
        stack, image, {}
    )
    _, chosen = _run(stack, image, {"channels": "2"})
    _, expected = _run(stack, _png(cyx[2]), {})
    np.testing.assert_array_equal(_fractal_numbers(chosen), _fractal_numbers(expected))


def test_ome_channels_are_chosen_by_name(stack: InProcessStack) -> None:
    stack.start_worker()
    cyx = np.random.default_rng(3).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    image = _tiff(cyx, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "ER"]}})
    _, by_name = _run(stack, image, {"channels": "GFP"})
    _, expected = _run(stack, _png(cyx[1]), {})
    np.testing.assert_array_equal(_fractal_numbers(by_name), _fractal_numbers(expected))
    assert "names: ['DAPI', 'GFP', 'ER']" in _refused(stack, image, {"channels": "YFP"})


def test_rgba_with_opaque_alpha_runs_as_rgb_and_transparent_alpha_fails_saying_why(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    rgb = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    opaque = np.dstack([rgb, np.full((64, 64), 255, np.uint8)])
    _, with_alpha = _run(stack, _png(opaque), {})
    _, expected = _run(stack, _png(rgb), {})
    np.testing.assert_array_equal(_fractal_numbers(with_alpha), _fractal_numbers(expected))
    # Whether alpha is opaque shows only in the pixels, which the gateway does not decode:
    # the job fails at once (no retries) naming the alpha and the parameter that keeps RGB.
    holes = opaque.copy()
    holes[:8, :8, 3] = 0
    job = stack.client.submit("fractal", _png(holes), BOXES)
    failed = stack.client.wait(job.job_id, timeout_s=60)
    assert failed.status == pb.JOB_STATUS_FAILED and failed.attempts == 1
    assert "alpha channel is not opaque (64 of 4096 pixels" in failed.error
    assert "params.channels" in failed.error
    _, kept = _run(stack, _png(holes), {"channels": "0,1,2"})
    np.testing.assert_array_equal(_fractal_numbers(kept), _fractal_numbers(expected))


def test_cli_submit_wait_and_status_print_the_jobs_warnings(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    path = tmp_path / "camera.tif"
    tifffile.imwrite(path, _original_8bit().astype(np.uint16) * 16)
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    assert main(["submit", "fractal", str(path), "--param", "box_sizes=3-15", "--wait", *gateway]) == 0
    submitted = capsys.readouterr().out
    assert "\n  warning: input.image: pixel values span 0-4080, under 1/16 of the uint16 range" in submitted
    job_id = submitted.split()[0]
    assert main(["status", job_id, *gateway]) == 0
    assert "params.intensity=bit-depth:12" in capsys.readouterr().out
    assert main(["submit", "fractal", str(path), "--param", "box_sizes=3-15",
                 "--param", "intensity=bit-depth:12", "--wait", *gateway]) == 0
    assert "warning:" not in capsys.readouterr().out


def test_a_patch_stack_gets_the_jobs_intensity_scaling_and_its_warning(
    stack: InProcessStack, model_cache: Path
) -> None:
    stack.start_worker()
    patches = np.random.default_rng(7).integers(0, 256, (2, 64, 64, 3)).astype(np.uint16) * 16
    by_hand = scale_intensity(patches, parse_intensity("bit-depth:12")).pixels

    def features(stack_of_patches: np.ndarray, params: dict[str, str]) -> tuple[pb.Job, np.ndarray]:
        job = stack.client.submit("deep-features", image_from_array(np.zeros((8, 8), np.uint16)),
                                  params, tensors={"patches": stack_of_patches})
        done = stack.client.wait(job.job_id, timeout_s=180)
        assert done.status == pb.JOB_STATUS_DONE, done.error
        return done, table_values(stack.client.result(job.job_id).tables["features"])[1:]

    scaled_job, scaled = features(patches, {"intensity": "bit-depth:12"})
    _, expected = features(by_hand, {})
    np.testing.assert_array_equal(scaled, expected)
    assert not any("input.tensors[patches]" in w for w in scaled_job.warnings)
    plain_job, _ = features(patches, {})
    assert any(w.startswith("input.tensors[patches]: pixel values span") for w in plain_job.warnings)


def test_a_spot_features_job_runs_on_an_int32_label_mask_tiff(
    stack: InProcessStack, model_cache: Path
) -> None:
    stack.start_worker()
    labels = np.zeros((96, 96), np.int32)
    labels[8:40, 8:40], labels[50:90, 40:80] = 5, 70000  # a label beyond uint16, as StarDist writes
    request = pb.SubmitJobRequest(pipeline="spot-features", params={"model": "efficientnet-lite0"})
    rgb = np.random.default_rng(8).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    request.input.image.CopyFrom(image_from_array(rgb))
    request.input.images["cell_labels"].CopyFrom(_tiff(labels))
    job = stack.client.submit_request(request)
    done = stack.client.wait(job.job_id, timeout_s=180)
    assert done.status == pb.JOB_STATUS_DONE, done.error
    assert list(stack.client.result(job.job_id).tables["features"].row_ids) == ["5", "70000"]


def test_imagej_32_bit_float_data_reads_as_the_8_bit_originals_numbers(stack: InProcessStack) -> None:
    stack.start_worker()
    original = _original_8bit()
    as_float = (original / np.float32(255)).astype(np.float32)  # ImageJ "32-bit", 0..1
    _, plain_result = _run(stack, _png(original), {})
    done, float_result = _run(stack, _tiff(as_float, imagej=True), {})
    np.testing.assert_array_equal(_fractal_numbers(float_result), _fractal_numbers(plain_result))
    assert float_result.provenance["source_dtype"] == "float32"  # type: ignore[attr-defined]
    assert float_result.provenance["intensity_range"] == "0-1"  # type: ignore[attr-defined]


def test_float_data_outside_0_to_1_fails_at_full_range_and_runs_with_a_range(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    original = _original_8bit()
    counts = original.astype(np.float32) * 4 + 100  # 100..1120, as a processed image holds
    job = stack.client.submit("fractal", _tiff(counts), BOXES)
    failed = stack.client.wait(job.job_id, timeout_s=120)
    assert failed.status == pb.JOB_STATUS_FAILED
    assert "params.intensity: float32 pixels span 100 to 1120, outside the 0-1" in failed.error
    assert "range:LO-HI" in failed.error
    _, plain_result = _run(stack, _png(original), {})
    _, ranged_result = _run(stack, _tiff(counts), {"intensity": "range:100-1120"})
    np.testing.assert_array_equal(_fractal_numbers(ranged_result), _fractal_numbers(plain_result))


def test_bit_depth_of_float_data_is_refused_at_submit(stack: InProcessStack) -> None:
    details = _refused(stack, _tiff(np.zeros((64, 64), np.float32)), {"intensity": "bit-depth:12"})
    assert details.startswith("params.intensity: bit-depth:12 needs integer pixels; float32")


def test_signed_16_bit_data_with_bit_depth_12_gives_the_8_bit_originals_numbers(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    original = _original_8bit()
    _, plain_result = _run(stack, _png(original), {})
    _, signed_result = _run(stack, _tiff(original.astype(np.int16) * 16), {"intensity": "bit-depth:12"})
    np.testing.assert_array_equal(_fractal_numbers(signed_result), _fractal_numbers(plain_result))


def test_each_series_of_a_plate_scan_is_a_job_named_by_its_well(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    rng = np.random.default_rng(3)
    wells = {"B03": rng.integers(0, 256, (32, 40), dtype=np.uint8),
             "B04": rng.integers(0, 64, (32, 40), dtype=np.uint8)}
    plate = tmp_path / "plate.ome.tif"
    with tifffile.TiffWriter(plate, ome=True) as tif:
        for well, pixels in wells.items():
            tif.write(pixels, metadata={"Name": well})
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, wells["B03"])
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    assert main(["submit", "fractal", str(plate), str(single), "--each-series", "--param",
                 "box_sizes=3,5", "--batch", "plate-1", "--wait", "--json", *gateway]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["input_name"] for line in lines] == ["plate.ome.tif[B03]", "plate.ome.tif[B04]",
                                                       "single.tif"]
    assert [line["params"]["series"] for line in lines] == ["0", "1", ""]
    assert [line["warnings"] if "warnings" in line else [] for line in lines] == [[], [], []]
    box_count = [line["result"]["tensors"]["box_count"] for line in lines]
    assert box_count[0] == box_count[2] != box_count[1]  # B03 is single.tif; B04 another image
    # the same command again queues nothing new; --param series with it is refused
    assert main(["submit", "fractal", str(plate), "--each-series", "--param", "box_sizes=3,5",
                 "--batch", "plate-1", *gateway]) == 0
    assert "submitted before with the same file and parameters" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="without --param series"):
        main(["submit", "fractal", str(plate), "--each-series", "--param", "series=1", *gateway])


def test_each_time_point_of_a_time_lapse_is_a_job_of_its_own(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    movie = np.random.default_rng(4).integers(0, 256, (3, 2, 24, 32), dtype=np.uint8)  # T, Z, Y, X
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TZYX"})
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    assert main(["submit", "fractal", str(path), "--each-plane", "t", "--param", "z_project=max",
                 "--param", "box_sizes=3,5", "--wait", "--json", *gateway]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["input_name"] for line in lines] == [f"movie.tif[t={t}]" for t in range(3)]
    assert [line["params"]["plane"] for line in lines] == ["t=0", "t=1", "t=2"]
    for t, line in enumerate(lines):
        expected = gliding_box(movie[t].max(axis=0), box_sizes=[3, 5]).box_count
        np.testing.assert_array_equal(line["result"]["tensors"]["box_count"], expected)
    with pytest.raises(SystemExit, match="name the axis of --param plane"):
        main(["submit", "fractal", str(path), "--each-plane", "t", "--param", "plane=1", *gateway])
    assert main(["submit", "fractal", str(path), "--each-plane", "c", *gateway]) == 2
    assert "its axes are TZYX [3, 2, 24, 32]; no stack axis C" in capsys.readouterr().err
