"""Fractal tile stacks: many small images of one size as one job, each tile a row of the tables,
every value as the features service gives it for the tile alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from labsight import cli
from labsight.catalog import FEATURES
from labsight.cli import main
from labsight.client import build_request
from labsight.config import Settings
from labsight.errors import InvalidArgument
from labsight.runtime.server import RunningServer
from labsight.tables import table_values
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import features_pb2_grpc as features_grpc
from labsight.v1 import gateway_pb2 as pb
from services.features.extractor import DeepFeatureExtractor, ExtractorConfig
from services.features.models import feature_repository
from services.features.servicer import FeatureServicer
from services.gateway.pipelines.base import RunContext
from services.gateway.pipelines.fractal import FractalPipeline
from services.gateway.pipelines.fractal_tiles import computed_stacks, computed_tiles, fractal_stack_request
from services.gateway.services import ServiceClients

from .conftest import InProcessStack


def _tiles(count: int, side: int, channels: int = 3, dtype: type = np.uint8,
           seed: int = 5) -> np.ndarray:
    shape = (count, side, side, channels) if channels > 1 else (count, side, side)
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _alone(stack: InProcessStack, tile: np.ndarray, **options: object) -> features_pb2.ComputeFractalResponse:
    """The features service's answer for ``tile`` sent by itself."""
    request = features_pb2.ComputeFractalRequest(
        image=build_request("fractal", tile, {}).input.image, **options)
    with grpc.insecure_channel(stack.features.address) as channel:
        return features_grpc.FeatureServiceStub(channel).ComputeFractal(request)


@pytest.mark.parametrize(("count", "channels", "dtype"), [(70, 3, np.uint8), (3, 1, np.uint16)])
def test_a_tile_stack_is_one_job_a_row_per_tile_equal_to_each_tile_alone(
    stack: InProcessStack, count: int, channels: int, dtype: type,
) -> None:
    tiles = _tiles(count, 32, channels, dtype)  # 70 tiles: two batch calls, the second of 6
    stack.start_worker()
    result = stack.client.run("fractal", None, {"box_sizes": "3-15"}, tensors={"tiles": tiles},
                              timeout_s=120)
    table = result.tables["fractal"]
    assert list(result.to_pandas().index) == list(table.row_ids)
    assert list(table.row_ids) == [str(i) for i in range(count)]
    assert result.scalars["tiles"] == count
    values = table_values(table)
    lacunarity = np.frombuffer(result.tensors["lacunarity"].data, np.float64)
    assert list(result.tensors["lacunarity"].shape) == [count, 7]
    for index in (0, count // 2, count - 1):
        alone = _alone(stack, tiles[index], box_sizes=[3, 5, 7, 9, 11, 13, 15])
        assert list(alone.features.columns) == list(table.columns)
        np.testing.assert_array_equal(values[index], table_values(alone.features)[0])
        np.testing.assert_array_equal(lacunarity.reshape(count, 7)[index], alone.lacunarity)
        matrix = result.tensors["probability_r5"]
        assert list(matrix.shape) == [count, 25]
        np.testing.assert_array_equal(np.frombuffer(matrix.data, np.float64).reshape(count, 25)[index],
                                      alone.probabilities[1].probability)
    assert "weka_fractal" in result.tables and len(result.tables["weka_fractal"].row_ids) == count


def test_tiles_too_large_for_a_batch_go_one_call_each_with_percolation_as_alone(
    stack: InProcessStack,
) -> None:
    tiles = _tiles(3, 48, seed=8)  # with percolation at sides 3-21: over a batch image's cost
    request = build_request("fractal", tensor_pb2.Image(),
                            {"box_sizes": "3-21", "percolation": "true", "probabilities": "false"},
                            tensors={"tiles": tiles})
    result, reports = stack.run_in_worker(FractalPipeline(), request)
    assert [report[2:] for report in reports] == [(0, 3, "tiles"), (1, 3, "tiles"), (2, 3, "tiles"),
                                                  (3, 3, "tiles")]
    sides = list(range(3, 22, 2))
    ratios = np.frombuffer(result.tensors["percolation_percolating_ratio"].data, np.float64)
    assert list(result.tensors["percolation_percolating_ratio"].shape) == [3, len(sides)]
    assert not any(name.startswith("probability_r") for name in result.tensors)
    for index, tile in enumerate(tiles):
        alone = _alone(stack, tile, box_sizes=sides, percolation=True, omit_probabilities=True)
        np.testing.assert_array_equal(ratios.reshape(3, -1)[index], alone.percolation.percolating_ratio)
        np.testing.assert_array_equal(table_values(result.tables["fractal"])[index],
                                      table_values(alone.features)[0])
    assert "weka_percolation" in result.tables


def test_a_stack_request_is_sent_as_bytes_that_parse_to_the_message_with_its_tiles() -> None:
    tiles = _tiles(5, 16)[1:4]  # a slice of a stack: sent without a copy of the whole
    template = features_pb2.ComputeFractalRequest(box_sizes=[3, 5], percolation=True,
                                                  omit_probabilities=True)
    sent = features_pb2.ComputeFractalStackRequest.FromString(fractal_stack_request(template, tiles).data)
    assert sent == features_pb2.ComputeFractalStackRequest(
        tiles=to_tensor(tiles), box_sizes=[3, 5], percolation=True, omit_probabilities=True)


def _stack_call(stack: InProcessStack, request: features_pb2.ComputeFractalStackRequest
                ) -> features_pb2.ComputeFractalStackResponse:
    with grpc.insecure_channel(stack.features.address) as channel:
        return features_grpc.FeatureServiceStub(channel).ComputeFractalStack(request)


@pytest.mark.parametrize(("tiles", "options"), [
    (_tiles(5, 44), {}),
    (_tiles(3, 16, channels=1, dtype=np.uint16), {"box_sizes": [3, 5, 7], "percolation": True}),
])
def test_compute_fractal_stack_gives_each_tile_what_compute_fractal_gives_it_alone(
    stack: InProcessStack, tiles: np.ndarray, options: dict[str, object],
) -> None:
    answer = _stack_call(stack, features_pb2.ComputeFractalStackRequest(
        tiles=to_tensor(tiles), **options))  # type: ignore[arg-type]
    assert list(answer.features.row_ids) == [str(i) for i in range(len(tiles))]
    sides = len(answer.box_sizes)
    for index, tile in enumerate(tiles):
        alone = _alone(stack, tile, **options)
        assert list(answer.box_sizes) == list(alone.box_sizes)
        assert list(answer.features.columns) == list(alone.features.columns)
        np.testing.assert_array_equal(table_values(answer.features)[index], table_values(alone.features)[0])
        np.testing.assert_array_equal(from_tensor(answer.lacunarity)[index], alone.lacunarity)
        np.testing.assert_array_equal(from_tensor(answer.box_count)[index], alone.box_count)
        assert from_tensor(answer.fractal_dimension)[index] == alone.fractal_dimension.dimension
        assert from_tensor(answer.fractal_dimension_r_squared)[index] == alone.fractal_dimension.r_squared
        for side, entry in enumerate(alone.probabilities):
            np.testing.assert_array_equal(from_tensor(answer.probabilities[side])[index], entry.probability)
        if options.get("percolation"):
            np.testing.assert_array_equal(from_tensor(answer.percolation_cluster_count)[index],
                                          alone.percolation.cluster_count)
            assert from_tensor(answer.percolation_percolating_ratio).shape == (len(tiles), sides)
        else:
            assert not answer.HasField("percolation_cluster_count")


@pytest.mark.parametrize(("request_fields", "named"), [
    ({}, "tiles: missing; send the (N, H, W) or (N, H, W, C) stack of tiles"),
    ({"tiles": _tiles(65, 8)}, "tiles: 65 tiles; at most 64 per call"),
    ({"tiles": _tiles(2, 128), "percolation": True},
     "tiles: a 128x128 tile with 20 box sizes and percolation is 5.7e+09 box-pixel comparisons, "
     "over a stack tile's 2e+08"),
    ({"tiles": _tiles(2, 48, channels=4)}, "tiles: image has 4 channels"),
    ({"tiles": _tiles(2, 32)}, "tiles: box_sizes up to 41 need an image at least 41x41"),
    ({"tiles": np.zeros((2, 48, 48), np.float32)}, "tiles[0]: dtype float32"),
    ({"tiles": np.zeros((48, 48), np.uint8)}, "tiles: expected (N, H, W) or (N, H, W, C), got [48, 48]"),
    ({"tiles": _tiles(2, 48), "box_sizes": [3, 4]}, "tiles: box_sizes must be odd and positive"),
])
def test_a_bad_compute_fractal_stack_call_is_refused_naming_what_is_wrong(
    stack: InProcessStack, request_fields: dict[str, object], named: str,
) -> None:
    fields = dict(request_fields)
    if "tiles" in fields:
        fields["tiles"] = to_tensor(fields["tiles"])  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as refused:
        _stack_call(stack, features_pb2.ComputeFractalStackRequest(**fields))  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details()
    assert _stack_call(stack, features_pb2.ComputeFractalStackRequest(
        tiles=to_tensor(_tiles(1, 9)), box_sizes=[3])).features.row_ids == ["0"]  # still serving


def test_a_cancelled_stack_stops_between_calls_and_cancels_the_open_ones(
    stack: InProcessStack,
) -> None:
    tiles = _tiles(64 * 5, 24)
    template = features_pb2.ComputeFractalRequest(box_sizes=[3, 5], omit_probabilities=True)
    reports: list[int] = []

    def report(fraction: float, step: str, done: int = 0, total: int = 0, unit: str = "") -> None:
        reports.append(done)
        if done >= 64:
            raise RuntimeError("job cancelled")

    with stack.service_clients() as services, pytest.raises(RuntimeError, match="job cancelled"):
        computed_stacks(RunContext("job", {}, pb.JobInput(), services, report), tiles, template)
    assert reports == [0, 64]  # the first call's answer, then no other


class _FeaturesBeforeStacks(FeatureServicer):
    """The features service as it was before ComputeFractalStack (its generated default answers
    UNIMPLEMENTED), as a rolling upgrade may leave it for a while."""

    ComputeFractalStack = features_grpc.FeatureServiceServicer.ComputeFractalStack


def _register_features_before_stacks(server: grpc.Server, settings: Settings) -> None:
    config = ExtractorConfig.from_env()
    extractor = DeepFeatureExtractor(feature_repository(config.model_dirs), config)
    features_grpc.add_FeatureServiceServicer_to_server(_FeaturesBeforeStacks(extractor), server)


def test_a_stack_reaches_a_features_service_without_compute_fractal_stack_tile_by_tile(
    stack: InProcessStack, serve: Callable[..., RunningServer],
) -> None:
    older = serve(_register_features_before_stacks, FEATURES.grpc_services, stack.settings)
    tiles = _tiles(3, 16, seed=31)
    request = build_request("fractal", None, {"box_sizes": "3-9"}, tensors={"tiles": tiles},
                            tensor_names={"tiles": ["x", "y", "z"]})
    pipeline = FractalPipeline()
    params = pipeline.validate(dict(request.params), request.input)
    reports: list[tuple[object, ...]] = []
    services = ServiceClients({"features": older.address, "segmentation": "127.0.0.1:1",
                               "classifier": "127.0.0.1:1"})
    try:
        with pytest.raises(grpc.RpcError) as refused:  # what the older service answers
            services.features.ComputeFractalStack(features_pb2.ComputeFractalStackRequest())
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        result = pipeline.run(RunContext("job", params, request.input, services,
                                         lambda *report: reports.append(report)))
    finally:
        services.close()
    expected, _ = stack.run_in_worker(pipeline, request)  # the current service, stacks
    assert result == expected
    assert list(result.tables["fractal"].row_ids) == ["x", "y", "z"]
    assert reports[-1][2:] == (3, 3, "tiles")


def test_tiles_sent_one_per_call_report_progress_a_hundred_times_at_most(
    stack: InProcessStack,
) -> None:
    tiles = _tiles(250, 8)
    template = features_pb2.ComputeFractalRequest(box_sizes=[3], omit_probabilities=True)
    reports: list[int] = []
    with stack.service_clients() as services:
        answers = computed_tiles(RunContext("job", {}, pb.JobInput(), services,
                                            lambda *report: reports.append(report[2])), tiles, template)
    assert [answer.features.row_ids[0] for answer in answers] == [str(i) for i in range(250)]
    assert reports[0] == 0 and reports[-1] == 250
    assert reports == [0, *range(3, 250, 3), 250]  # every 3 tiles of 250, then the end


def _validate(params: dict[str, str], **inputs: object) -> None:
    request = build_request("fractal", inputs.pop("image", tensor_pb2.Image()), params, **inputs)  # type: ignore[arg-type]
    FractalPipeline().validate(dict(request.params), request.input)


@pytest.mark.parametrize(("params", "inputs", "named"), [
    ({}, {"image": _tiles(1, 48)[0], "tensors": {"tiles": _tiles(2, 48)}},
     "give input.image or input.tensors[tiles], not both"),
    ({}, {"tensors": {"tiles": _tiles(2, 48, channels=4)}},
     "input.tensors[tiles]: 4 channels; fractal features take grey (1) or RGB (3) images: stack the"),
    ({}, {"tensors": {"tiles": _tiles(2, 32)}}, "smaller than the largest box side 41"),
    ({"channels": "0"}, {"tensors": {"tiles": _tiles(2, 48)}}, "params.channels: applies to input.image"),
    ({}, {"tensors": {"tiles": np.zeros((48, 48), np.uint8)}}, "expected (N, H, W) or (N, H, W, C)"),
    ({}, {"tensors": {"tiles": np.zeros((2, 48, 48), np.float32)}}, "dtype float32 not supported"),
    ({}, {"tensors": {"tiles": np.zeros((700, 48, 48), np.uint8)}},  # 700 x 95 KB of P(m, r)
     "params.probabilities: the probability matrices of 700 tiles take 69104000 bytes"),
])
def test_a_bad_tile_stack_is_refused_naming_what_is_wrong(
    params: dict[str, str], inputs: dict[str, object], named: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _validate(params, **inputs)
    assert named in str(raised.value)


def test_many_tiles_fit_a_result_without_their_probability_matrices() -> None:
    _validate({"probabilities": "false"}, tensors={"tiles": np.zeros((700, 48, 48), np.uint8)})


def test_named_tiles_name_the_rows_of_every_table(stack: InProcessStack) -> None:
    stack.start_worker()
    names = ["slide-1/tile_0_0.png", "slide-1/tile_0_64.png", "slide-2/tile_0_0.png"]
    job = stack.client.submit("fractal", None, {"box_sizes": "3-9", "probabilities": "false"},
                              tensors={"tiles": _tiles(3, 16)}, tensor_names={"tiles": names})
    assert stack.client.wait(job.job_id, timeout_s=60).status == pb.JOB_STATUS_DONE
    result = stack.client.result(job.job_id)
    assert {name: list(table.row_ids) for name, table in result.tables.items()} == {
        "fractal": names, "weka_fractal": names}


@pytest.mark.parametrize(("inputs", "named"), [
    ({"tensors": {"tiles": _tiles(3, 16)}, "tensor_names": {"tiles": ["a", "b"]}},
     "input.tensor_names[tiles]: 2 names for the 3 images of input.tensors[tiles]; give one per image"),
    ({"tensors": {"tiles": _tiles(2, 16)}, "tensor_names": {"tiles": ["a", ""]}},
     "input.tensor_names[tiles].names[1]: a name must have 1 to 1024 characters, got 0"),
    ({"tensors": {"tiles": _tiles(1, 16)}, "tensor_names": {"tiles": ["a" * 1025]}},
     "input.tensor_names[tiles].names[0]: a name must have 1 to 1024 characters, got 1025"),
    ({"tensors": {"tiles": _tiles(1, 16)}, "tensor_names": {"spots": ["a"]}},
     "input.tensor_names[spots]: pipeline 'fractal' names the images of ['tiles'], not of 'spots'"),
    ({"image": _tiles(1, 48)[0], "tensor_names": {"tiles": ["a"]}},
     "input.tensor_names[tiles]: no tensor 'tiles' in input.tensors to name"),
])
def test_bad_tile_names_are_refused_at_submit_naming_what_is_wrong(
    stack: InProcessStack, inputs: dict[str, object], named: str,
) -> None:
    options = dict(inputs)
    image = options.pop("image", None)
    with pytest.raises(grpc.RpcError) as refused:
        stack.client.submit("fractal", image, {"box_sizes": "3-9"}, **options)  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details()


def test_a_stack_over_the_work_limit_is_refused_at_submit_through_the_gateway(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_FRACTAL_COST", "1e9")  # 2,000 64² tiles at 3-41: 9.4e10
    with pytest.raises(grpc.RpcError) as raised:
        stack.client.submit("fractal", tensor_pb2.Image(), {}, tensors={"tiles": _tiles(2000, 64)})
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2000 tiles of 64x64 pixels" in raised.value.details()
    assert "send fewer tiles per job" in raised.value.details()


def test_the_cli_submits_a_tile_stack_alone_as_one_job_and_exports_a_row_per_tile(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    stack.start_worker()
    tiles = _tiles(5, 48, seed=11)
    np.save(tmp_path / "tiles.npy", tiles)
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    code = main(["submit", "fractal", *gateway, "--wait", "--json", "--param", "box_sizes=3-9",
                 "--tensor", f"tiles={tmp_path / 'tiles.npy'}"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and line["status"] == "done", line
    output = tmp_path / "tiles.csv"
    assert main(["results", line["job_id"], *gateway, "--table", "fractal", "-o", str(output)]) == 0
    frame = pd.read_csv(output, index_col=0)
    assert len(frame) == 5
    alone = _alone(stack, tiles[3], box_sizes=[3, 5, 7, 9])
    assert frame["FractalDimension"].iloc[3] == pytest.approx(alone.fractal_dimension.dimension, rel=1e-12)
    figure = tmp_path / "tiles.png"
    assert main(["plot", line["job_id"], *gateway, "-o", str(figure)]) == 0  # a curve per tile
    assert figure.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="--tensor arrays alone"):
        main(["submit", "fractal", *gateway])


def test_the_cli_packs_a_folder_into_stacks_of_same_size_images_named_by_file(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack.start_worker()
    folder = tmp_path / "tiles"
    folder.mkdir()
    small, large = _tiles(5, 16, seed=21), _tiles(2, 20, seed=22)
    deep = _tiles(1, 16, channels=1, dtype=np.uint16, seed=23)[0]
    for index, tile in enumerate(small):
        Image.fromarray(tile).save(folder / f"a_{index}.png")
    for index, tile in enumerate(large):
        Image.fromarray(tile).save(folder / f"b_{index}.png")
    tifffile.imwrite(folder / "c.tif", deep)
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    code = main(["submit", "fractal", str(folder), "--stack", "3", *gateway, "--wait", "--json",
                 "--param", "box_sizes=3-9", "--param", "probabilities=false", "--batch", "packed"])
    out, err = capsys.readouterr()
    jobs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [job["status"] for job in jobs] == ["done"] * 4, err
    assert "labsight: batch packed: 4 jobs" in err  # a_0-2, a_3-4, b_0-1, c: one shape and dtype each
    assert [job["input_name"] for job in jobs] == [
        "a_0.png (+2 more)", "a_3.png (+1 more)", "b_0.png (+1 more)", "c.tif"]
    output = tmp_path / "fractal.csv"
    assert main(["results", "--batch", "packed", *gateway, "--table", "fractal", "-o", str(output)]) == 0
    frame = pd.read_csv(output, index_col="id")
    names = [f"a_{i}.png" for i in range(5)] + ["b_0.png", "b_1.png", "c.tif"]
    assert sorted(frame.index) == names
    for name, tile in [("a_3.png", small[3]), ("b_1.png", large[1]), ("c.tif", deep)]:
        alone = _alone(stack, tile, box_sizes=[3, 5, 7, 9])
        assert frame.loc[name, "FractalDimension"] == pytest.approx(alone.fractal_dimension.dimension,
                                                                   rel=1e-12)
    with pytest.raises(SystemExit, match="not of cells"):
        main(["submit", "cells", str(folder), "--stack", "3", *gateway])
    capsys.readouterr()
    monkeypatch.setattr(cli, "STACK_HINT_FILES", 8)  # a folder of 8 images stands for thousands
    assert main(["submit", "fractal", str(folder), *gateway, "--param", "box_sizes=3-9"]) == 0
    assert "8 images, a job each; small images of one size run faster as stacks: --stack 256" in (
        capsys.readouterr().err)

    submitted = stack.client.submit_folder("fractal", [folder], {"box_sizes": "3-9"}, stack=4,
                                           batch_id="packed-sdk", progress=False)
    assert len(submitted.job_ids) == 4  # a_0-3, a_4, b_0-1, c
    table = stack.client.batch_to_pandas("packed-sdk", "fractal", timeout_s=60)
    assert sorted(table.index.get_level_values("id")) == names
    assert table.xs("b_1.png", level="id")["FractalDimension"].iloc[0] == pytest.approx(
        frame.loc["b_1.png", "FractalDimension"], rel=1e-12)
    with pytest.raises(ValueError, match="pipeline 'cells' takes no stack of images"):
        stack.client.submit_folder("cells", [folder], stack=4)
