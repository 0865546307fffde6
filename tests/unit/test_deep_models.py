"""The built-in CNNs with their real ImageNet weights: ONNX export, layer cuts, pooling, sanity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from skimage import data

from labsight.errors import InvalidArgument
from labsight.models import (
    ModelManifest,
    ModelRepository,
    ModelServer,
    OnnxEngine,
    ServingConfig,
    TorchEngine,
    build_engine,
    build_engines,
    build_layer_index,
    load_torch_model,
)
from labsight.models.onnx_graph import cut_at_outputs, node_module_path, onnx_path
from services.features import deep
from services.features.deep import feature_columns, pool, preprocess
from services.features.models import DEFAULT_MODEL, SPOT_MODEL, feature_repository

IMAGENET_CATS = range(281, 286)
"""ImageNet classes tabby, tiger cat, Persian, Siamese and Egyptian cat."""


@pytest.fixture(scope="module")
def repository() -> ModelRepository:
    return feature_repository()


@pytest.fixture(scope="module")
def lite(repository: ModelRepository) -> ModelManifest:
    return repository.get(DEFAULT_MODEL)


def _batch(manifest: ModelManifest, count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 90, 3), dtype=np.uint8) for _ in range(count)]
    return preprocess(images, manifest.input_size, manifest.preprocessing)


def test_efficientnet_recognises_the_cat_photo(lite: ModelManifest, model_cache: Path) -> None:
    engine = build_engine(lite, "logits", "cpu", model_cache)
    logits = engine.run(preprocess([data.chelsea()], lite.input_size, lite.preprocessing))
    assert logits.shape == (1, 1000)
    assert int(np.argmax(logits[0])) in IMAGENET_CATS


@pytest.mark.parametrize("layer", ["avgpool", "block15", "_blocks.3", "_swish"])
def test_onnx_layer_cuts_equal_torch_forward_hooks(
    lite: ModelManifest, model_cache: Path, layer: str
) -> None:
    batch = _batch(lite)
    from_onnx = build_engine(lite, layer, "cpu", model_cache).run(batch)
    from_torch = TorchEngine(load_torch_model(lite), lite.module_path(layer), "cpu").run(batch)
    assert from_onnx.shape == from_torch.shape
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4, rtol=1e-4)


def test_inception_onnx_equals_the_torchscript_file(
    repository: ModelRepository, model_cache: Path
) -> None:
    inception = repository.get(SPOT_MODEL)
    batch = _batch(inception, count=1)
    from_onnx = build_engine(inception, "avgpool", "cpu", model_cache).run(batch)
    from_torch = TorchEngine(load_torch_model(inception), "", "cpu").run(batch)
    assert from_onnx.shape == (1, 2048)
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4, rtol=1e-4)
    mixed = build_engine(inception, "mixed_10", "cpu", model_cache).run(batch)
    assert mixed.shape == (1, 2048, 8, 8)


def test_the_onnx_file_is_exported_once_and_reused(lite: ModelManifest, model_cache: Path) -> None:
    build_engine(lite, "avgpool", "cpu", model_cache)
    exported = sorted(model_cache.glob(f"{DEFAULT_MODEL}-*.onnx"))
    assert len(exported) == 1
    mtime = exported[0].stat().st_mtime_ns
    build_engine(lite, "logits", "cpu", model_cache)
    assert exported[0].stat().st_mtime_ns == mtime


def test_two_models_export_at_once_in_one_process(
    repository: ModelRepository, tmp_path: Path
) -> None:
    """torch's exporter keeps global state; two first requests for different models must both work."""
    manifests = [repository.get(DEFAULT_MODEL), repository.get(SPOT_MODEL)]
    with ThreadPoolExecutor(2) as pool_:
        paths = list(pool_.map(lambda manifest: onnx_path(manifest, tmp_path), manifests))
    assert [onnx.load(str(path)).graph.input[0].name for path in paths] == ["input", "input"]


def test_constants_and_shape_arithmetic_are_no_layers(lite: ModelManifest, model_cache: Path) -> None:
    """A cut at a value that does not depend on the images has no input: refused, not an IndexError."""
    index = build_layer_index(lite, "onnx", model_cache)
    for value in ("/_blocks.0/_swish/Constant_output_0", "/Shape_output_0"):
        with pytest.raises(InvalidArgument, match="is not a layer of model"):
            index.target(value)
    assert index.target("/_conv_stem/Conv_output_0") == "/_conv_stem/Conv_output_0"


def test_an_unknown_layer_is_an_invalid_argument(lite: ModelManifest, model_cache: Path) -> None:
    with pytest.raises(InvalidArgument, match="layer: 'no_such_layer' is not a layer of model"):
        build_engine(lite, "no_such_layer", "cpu", model_cache)
    with pytest.raises(InvalidArgument, match="layer: the model has no module 'no_such_layer'"):
        TorchEngine(load_torch_model(lite), "no_such_layer", "cpu")


def test_the_layer_index_names_the_valid_layers_and_the_closest_ones(
    lite: ModelManifest, model_cache: Path
) -> None:
    index = build_layer_index(lite, "onnx", model_cache)
    assert index.target("avgpool") == index.target("_avg_pooling")
    assert index.target(index.target("block15")) == index.target("block15")  # a graph value
    assert all(f"_blocks.{i}" in index.modules for i in range(16))
    with pytest.raises(InvalidArgument) as error:
        index.target("_blocks.1x" + "y" * 5000)
    message = str(error.value)
    assert message.startswith("layer: '_blocks.1xyyyy")
    assert "is not a layer of model 'efficientnet-lite0'; layers: ['avgpool', 'block15', 'logits']" in message
    assert f"one of its {len(index.modules)} module paths" in message and len(message) < 400
    with pytest.raises(InvalidArgument, match="did you mean '_blocks.1'"):
        index.target("_blocks.1x")


def test_torch_and_onnx_indexes_serve_the_public_layers(lite: ModelManifest, model_cache: Path) -> None:
    torch_index = build_layer_index(lite, "torch", model_cache)
    targets = [torch_index.target(layer) for layer in sorted(lite.layers)]
    assert targets == ["_avg_pooling", "_blocks.15", "_fc"]
    assert "_blocks.3._depthwise_conv" in torch_index.modules
    with pytest.raises(InvalidArgument, match="layer: 'fc9' is not a layer"):
        torch_index.target("fc9")


def test_a_cut_holds_only_the_weights_its_layer_needs(lite: ModelManifest, model_cache: Path) -> None:
    early = build_engines(lite, build_layer_index(lite, "onnx", model_cache).target("_blocks.1"),
                          "onnx", 1, model_cache)[0]
    late = build_engine(lite, "avgpool", "cpu", model_cache)
    assert early.nbytes < 4 << 20 < 16 << 20 < late.nbytes
    late.close()
    assert late.closed
    with pytest.raises(RuntimeError, match="closed"):
        late.run(_batch(lite))


def test_onnx_engine_runs_any_batch_size(lite: ModelManifest, model_cache: Path) -> None:
    engine = build_engine(lite, "avgpool", "cpu", model_cache)
    assert isinstance(engine, OnnxEngine)
    assert engine.run(_batch(lite, count=5)).shape == (5, 1280, 1, 1)


def test_onnx_engine_in_slices_of_rows_answers_as_one_run(lite: ModelManifest, model_cache: Path) -> None:
    target = build_layer_index(lite, "onnx", model_cache).target("avgpool")
    whole, sliced = (build_engines(lite, target, "onnx", 1, model_cache, threads=1, run_rows=rows)[0]
                     for rows in (0, 2))
    batch = _batch(lite, count=5)  # slices of 2, 2 and 1 rows
    np.testing.assert_allclose(sliced.run(batch), whole.run(batch), rtol=1e-5, atol=1e-6)
    assert sliced.run(batch[:1]).shape == (1, 1280, 1, 1)


def test_a_served_layer_runs_in_slices_of_rows_per_thread(lite: ModelManifest, model_cache: Path) -> None:
    config = ServingConfig(cache_dir=model_cache, instances=1, threads=3, run_rows=2)
    with ModelServer(feature_repository(), config).served(lite, "avgpool") as served:
        assert [engine.run_rows for engine in served.engines] == [6]  # type: ignore[attr-defined]
        assert served.run(_batch(lite, count=7))[served.output_names[0]].shape == (7, 1280, 1, 1)


def test_pooling_reduces_maps_to_vectors() -> None:
    maps = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(pool(maps, "average"), maps.mean(axis=(2, 3)))
    np.testing.assert_array_equal(pool(maps, "max"), maps.max(axis=(2, 3)))
    np.testing.assert_array_equal(pool(maps, "none"), maps.reshape(2, 12))
    np.testing.assert_array_equal(pool(maps[:, :, 0, 0], "max"), maps[:, :, 0, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "median")  # type: ignore[arg-type]


def test_columns_follow_the_seed_naming() -> None:
    assert feature_columns("avgpool", 3) == ["avgpool1", "avgpool2", "avgpool3"]
    assert feature_columns("_blocks.15", 2) == ["_blocks.15_1", "_blocks.15_2"]
    feature_columns("avgpool", 3).append("changed")  # each caller gets a list of its own
    assert feature_columns("avgpool", 3) == ["avgpool1", "avgpool2", "avgpool3"]


def test_names_of_an_unpooled_map_are_made_each_time_not_kept() -> None:
    # pooling=none gives every position a column: 288 x 35 x 35 for one Inception-v3 block.
    # Kept by the name cache, 256 such layers held gigabytes for the service's lifetime.
    cached = deep._cached_columns.cache_info().currsize
    names = feature_columns("mixed_5b", deep.CACHED_COLUMNS_MAX + 1)
    assert names[:2] == ["mixed_5b1", "mixed_5b2"] and names[-1] == f"mixed_5b{len(names)}"
    assert deep._cached_columns.cache_info().currsize == cached
    assert feature_columns("conv_7", 2) == ["conv_7_1", "conv_7_2"]
    assert deep._cached_columns.cache_info().currsize == cached + 1


def test_preprocessing_scales_normalises_and_resizes(lite: ModelManifest) -> None:
    grey = np.full((10, 20), 127, np.uint8)
    batch = preprocess([grey], (4, 6), lite.preprocessing)
    assert batch.shape == (1, 3, 4, 6) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, 0.0, atol=1e-6)  # (127/255 - 127/255) / (128/255)
    sixteen = np.full((4, 6, 3), 65535, np.uint16)
    np.testing.assert_allclose(preprocess([sixteen], (4, 6), lite.preprocessing), 128 / 128, rtol=1e-5)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 4), np.uint8), r"images\[1\]: 4 channels; expected 3"),
        (np.zeros((0, 8, 3), np.uint8), r"images\[1\]: expected a non-empty"),
        (np.zeros((8, 8, 3), np.float32), r"images\[1\]: dtype float32"),
    ],
)
def test_preprocessing_refuses_bad_images_naming_them(
    lite: ModelManifest, image: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess([np.zeros((8, 8, 3), np.uint8), image], (4, 4), lite.preprocessing)


def test_node_scopes_map_to_module_paths() -> None:
    assert node_module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert node_module_path("/_blocks.3/_swish_1/Clip") == "_blocks.3._swish_1"
    assert node_module_path("/net/layers/mixed_10/Concat") == "net.layers.mixed_10"
    assert node_module_path("Constant_672") == ""


def test_a_cut_keeps_the_weights_that_subgraphs_read_and_drops_the_rest() -> None:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full(2, 3.0, np.float32), "w")
    unused = numpy_helper.from_array(np.zeros(1000, np.float32), "unused")

    def branch(op: str, out: str) -> object:
        return helper.make_graph([helper.make_node(op, ["x", "w"], [out])], op, [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])])

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True))),
         helper.make_node("If", ["c"], ["y"], then_branch=branch("Mul", "t"), else_branch=branch("Add", "e")),
         helper.make_node("Mul", ["y", "unused"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [weight, unused],
    )
    cut = cut_at_outputs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), ["y"])
    assert [tensor.name for tensor in cut.graph.initializer] == ["w"]
    engine = OnnxEngine(cut.SerializeToString(), threads=1)
    np.testing.assert_array_equal(engine.run(np.ones(2, np.float32)), [3.0, 3.0])


_ARENA_PROBE = """
import sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from labsight.models import OnnxEngine

weight = numpy_helper.from_array(np.ones((64, 3, 3, 3), np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
     helper.make_node("Relu", ["conv"], ["relu"]),
     helper.make_node("GlobalAveragePool", ["relu"], ["y"])],
    "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
engine = OnnxEngine(model, threads=1, shrink_arena=sys.argv[1] == "1")

def resident() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

engine.run(np.ones((1, 3, 8, 8), np.float32))
before = resident()
engine.run(np.ones((4, 3, 256, 256), np.float32))  # two activations of 64 MiB each
print(resident() - before)
"""


@pytest.mark.parametrize("shrink", [False, True])
def test_a_shrinking_arena_hands_back_what_a_large_batch_took(shrink: bool) -> None:
    import subprocess
    import sys

    growth = int(subprocess.run(
        [sys.executable, "-c", _ARENA_PROBE, "1" if shrink else "0"],
        check=True, capture_output=True, text=True,
    ).stdout)
    mib = 1 << 20
    if shrink:
        assert growth < 32 * mib, f"the arena kept {growth / mib:.0f} MiB"
    else:
        assert growth > 64 * mib, f"ONNX Runtime's default arena kept only {growth / mib:.0f} MiB"
