"""Everything a pipeline can check is checked at SubmitJob, from headers, before anything is queued."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from prometheus_client import REGISTRY

from labsight.catalog import GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.errors import InvalidArgument
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.v1 import features_pb2, features_pb2_grpc, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.models import ModelCatalog
from services.gateway.servicer import register as register_gateway
from services.gateway.services import ServiceClients
from tests import hostile_images
from tests.integration.conftest import InProcessStack

LIMIT_MB = 50


def _encoded(data: bytes) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data))


def _tiff(pixels: np.ndarray, **options: object) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    return _encoded(buffer.getvalue())


def _png(pixels: np.ndarray, mode: str | None = None) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return _encoded(buffer.getvalue())


def _refusal(submit: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        submit()
    return error.value


HOSTILE = {
    "planar_tiff": (hostile_images.planar_tiff, "1000x200000 pixels with 3 channel(s)"),
    "many_samples_tiff": (hostile_images.many_samples_tiff, "300 channels"),
    "jpeg_12000": (lambda: hostile_images.jpeg_declaring(12000, 12000), "12000x12000 pixels"),
    "png_13000": (lambda: hostile_images.png_zeros(13000, 13000), "13000x13000 pixels"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("pipeline", ["fractal", "deep-features"])
def test_small_files_declaring_huge_images_are_refused_at_submit_without_decoding(
    stack: InProcessStack, case: str, pipeline: str
) -> None:
    build, message = HOSTILE[case]
    image = _encoded(build())
    tracemalloc.start()
    try:
        error = _refusal(lambda: stack.client.submit(pipeline, image))
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("input.image: ") and message in error.details()
    assert peak_mb < LIMIT_MB, f"submitting {case} allocated {peak_mb:.0f} MB"
    assert stack.client.list_jobs() == []


def test_lab_images_are_accepted(stack: InProcessStack) -> None:
    stack.client.submit("fractal", _encoded(hostile_images.png_zeros(2048, 2048)))
    stack.client.submit("fractal", image_from_array(np.zeros((64, 64, 3), np.uint16)),
                        {"percolation": True})
    stack.client.submit("deep-features", _png(np.zeros((64, 64, 3), np.uint8)))
    assert len(stack.client.list_jobs()) == 3


@pytest.mark.parametrize(
    ("image", "channels"),
    [
        # Channels from the file's axes metadata (an opaque alpha would be dropped instead).
        (_tiff(np.zeros((4, 64, 64), np.uint8), imagej=True, metadata={"axes": "CYX"}), 4),
        (_tiff(np.zeros((2, 64, 64), np.uint16), ome=True, metadata={"axes": "CYX"}), 2),
        (image_from_array(np.zeros((64, 64, 2), np.uint8)), 2),
        (image_from_array(np.zeros((64, 64, 4), np.uint8)), 4),
        (image_from_array(np.zeros((64, 64, 5), np.uint16)), 5),
    ],
)
@pytest.mark.parametrize("pipeline", ["fractal", "deep-features"])
def test_images_with_channels_the_pipeline_cannot_take_are_refused_at_submit(
    stack: InProcessStack, pipeline: str, image: tensor_pb2.Image, channels: int
) -> None:
    error = _refusal(lambda: stack.client.submit(pipeline, image))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"input.image: {channels} channels;" in error.details()
    assert stack.client.list_jobs() == []


@pytest.mark.parametrize(
    ("box_sizes", "side", "message"),
    [
        ("3-10000001", 64, "params.box_sizes: a range must lie within 3-255, got '3-10000001'"),
        ("3-" + "9" * 400, 64, "params.box_sizes: a range must lie within 3-255, got '3-999"),
        ("3-301", 301, "params.box_sizes: a range must lie within 3-255"),
        ("3-65", 64, "64x64 pixels is smaller than the largest box side 65"),
    ],
)
def test_box_sizes_are_checked_by_their_bounds_against_the_core_and_the_image(
    stack: InProcessStack, box_sizes: str, side: int, message: str
) -> None:
    image = _encoded(hostile_images.png_zeros(side, side))
    error = _refusal(lambda: stack.client.submit("fractal", image, {"box_sizes": box_sizes}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert len(error.details()) < 1000
    assert stack.client.list_jobs() == []


def test_costly_fractal_jobs_need_the_operator_to_raise_the_limit(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg = _encoded(hostile_images.jpeg_declaring(4000, 4000))
    error = _refusal(lambda: stack.client.submit("fractal", jpeg, {"box_sizes": "3-81"}))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fractal job on 4000x4000 pixels" in error.details()
    assert "over the limit of 1e+12 (LABSIGHT_MAX_FRACTAL_COST)" in error.details()
    png = _encoded(hostile_images.png_zeros(2048, 2048))
    error = _refusal(lambda: stack.client.submit("fractal", png, {"percolation": True}))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "and percolation costs" in error.details() and "or no percolation" in error.details()
    assert stack.client.list_jobs() == []
    monkeypatch.setenv("LABSIGHT_MAX_FRACTAL_COST", "2e12")
    stack.client.submit("fractal", png, {"percolation": True})
    assert len(stack.client.list_jobs()) == 1


def test_too_many_patches_for_the_model_need_the_operator_to_raise_the_limit(
    stack: InProcessStack,
) -> None:
    patches = np.zeros((25_000, 8, 8, 3), np.uint8)  # 25,000 x 224² model-input pixels
    error = _refusal(lambda: stack.client.submit(
        "deep-features", tensor_pb2.Image(), {"model": "efficientnet-lite0"}, tensors={"patches": patches}))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "25000 images through model 'efficientnet-lite0' costs 1.25e+09 model-input pixels" in (
        error.details())
    assert "LABSIGHT_MAX_DEEP_FEATURES_COST" in error.details()
    stack.client.submit("deep-features", tensor_pb2.Image(), {"model": "efficientnet-lite0"},
                        tensors={"patches": patches[:300]})


def _list_models_calls() -> float:
    return REGISTRY.get_sample_value(
        "labsight_grpc_requests_total",
        {"method": "/labsight.v1.FeatureService/ListModels", "code": "OK"},
    ) or 0.0


@pytest.mark.parametrize("pipeline", ["deep-features", "spot-features"])
def test_unknown_models_are_refused_at_submit_from_a_cached_model_list(
    stack: InProcessStack, pipeline: str
) -> None:
    calls_before = _list_models_calls()
    image = image_from_array(np.zeros((64, 64, 3), np.uint8))
    spots = pipeline == "spot-features"
    params = {"model": "no-such-net", **({"spot_diameter": 9} if spots else {})}
    tensors = {"spot_centres": np.array([[32.0, 32.0]])} if spots else {}
    for _ in range(3):
        error = _refusal(lambda: stack.client.submit(pipeline, image, params, tensors=tensors))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "params.model: unknown model 'no-such-net'; models: [" in error.details()
        assert "'efficientnet-lite0'" in error.details()
    assert _list_models_calls() - calls_before == 1
    assert stack.client.list_jobs() == []


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"spot_centres": np.array([[32.0, 32.0]])}, "params.spot_diameter: a 65x65 patch does not fit"),
        ({"spot_centres": np.array([[32.0, np.nan]])}, "coordinates must be finite"),
        ({"cell_labels": np.ones((32, 64), np.int32)},
         "input.tensors[cell_labels]: shape [32, 64] does not match the image's [64, 64]"),
        ({"cell_labels": np.ones((64, 64), np.float32)}, "expected an integer label mask, got dtype float32"),
        ({"cell_labels": np.zeros((64, 64), np.int32)}, "the mask holds no cell"),
    ],
)
def test_spot_and_cell_inputs_are_checked_against_the_image_at_submit(
    stack: InProcessStack, tensors: dict[str, np.ndarray], message: str
) -> None:
    image = image_from_array(np.zeros((64, 64, 3), np.uint8))
    error = _refusal(lambda: stack.client.submit("spot-features", image, {"spot_diameter": 65},
                                                 tensors=tensors))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert stack.client.list_jobs() == []


def test_spots_near_the_border_are_accepted_unless_drop_would_leave_none(
    stack: InProcessStack,
) -> None:
    image = image_from_array(np.zeros((64, 64, 3), np.uint8))
    border = {"spot_centres": np.array([[2.0, 32.0], [63.0, 63.0]])}
    stack.client.submit("spot-features", image, {"spot_diameter": 9}, tensors=border)
    error = _refusal(lambda: stack.client.submit(
        "spot-features", image, {"spot_diameter": 9, "spot_edge": "drop"}, tensors=border))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "params.spot_edge: every spot's 9x9 patch reaches past the border" in error.details()
    error = _refusal(lambda: stack.client.submit(
        "spot-features", image, {"spot_diameter": 9, "spot_edge": "wrap"}, tensors=border))
    assert "params.spot_edge: expected one of ['pad-constant'" in error.details()
    outside = {"spot_centres": np.array([[32.0, 32.0], [64.0, 10.0]])}
    error = _refusal(lambda: stack.client.submit("spot-features", image, {"spot_diameter": 9},
                                                 tensors=outside))
    assert ("input.tensors[spot_centres][1]: the centre (x=64.0, y=10.0) lies outside the 64x64 "
            "image (1 spots do)") in error.details()
    assert len(stack.client.list_jobs()) == 1


def test_jobs_are_accepted_while_the_features_service_is_down(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    """The worker waits for the service and checks then; a restart must not fail submissions."""
    settings.service_addresses = {name: "127.0.0.1:1" for name in ("features", "segmentation",
                                                                    "classifier")}
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    try:
        client.submit("deep-features", _png(np.zeros((64, 64, 3), np.uint8)), {"model": "later-net"})
        assert len(client.list_jobs()) == 1
    finally:
        client.close()


def test_the_model_list_is_cached_for_its_time_and_skipped_while_the_service_is_gone(
    stack: InProcessStack,
) -> None:
    now = [0.0]
    catalog = ModelCatalog(ttl_s=30.0, clock=lambda: now[0])
    catalog.connect(ServiceClients(stack.settings.service_addresses))
    try:
        calls_before = _list_models_calls()
        assert catalog.check("inception-v3") is not None
        stack.features.stop(grace_s=0)
        now[0] = 29.0
        with pytest.raises(InvalidArgument, match="params.model: unknown model 'no-such-net'"):
            catalog.check("no-such-net")  # from the cached list
        assert _list_models_calls() - calls_before == 1
        now[0] = 31.0
        assert catalog.models() is None
        assert catalog.check("no-such-net") is None  # unchecked: the worker will wait and see
    finally:
        catalog.connect(None)


def test_cells_are_counted_when_their_bound_is_over_the_work_limit(stack: InProcessStack) -> None:
    image = image_from_array(np.zeros((128, 128, 3), np.uint8))
    few = np.zeros((128, 128), np.uint16)  # a uint16 mask may hold 65,535 cells: counted, 2
    few[:10, :10], few[50:60, 50:60] = 1, 60000
    stack.client.submit("spot-features", image, {"model": "inception-v3"},
                        images={"cell_labels": _png(few)})
    many = np.arange(1, 128 * 128 + 1, dtype=np.int32).reshape(128, 128)
    error = _refusal(lambda: stack.client.submit(
        "spot-features", image, {"model": "inception-v3"}, tensors={"cell_labels": many}))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16384 images through model 'inception-v3' costs 1.46e+09 model-input pixels" in (
        error.details())
    assert len(stack.client.list_jobs()) == 1


def _layer_paths_once_loaded(stack: InProcessStack, model: str) -> list[str]:
    """The model's layer paths from the features service, after one request has loaded the model."""
    with grpc.insecure_channel(stack.features.address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        listing = features_pb2.ListModelsRequest(with_layer_paths=True)
        assert {info.name: list(info.layer_paths) for info in stub.ListModels(listing).models}[model] == []
        stub.ExtractDeepFeatures(features_pb2.ExtractDeepFeaturesRequest(
            model=model, images=[image_from_array(np.zeros((8, 8, 3), np.uint8))]))
        return {info.name: list(info.layer_paths) for info in stub.ListModels(listing).models}[model]


@pytest.mark.parametrize("pipeline", ["deep-features", "spot-features"])
def test_unknown_layers_are_refused_at_submit_once_the_service_has_listed_them(
    stack: InProcessStack, pipeline: str
) -> None:
    paths = _layer_paths_once_loaded(stack, "efficientnet-lite0")
    image = image_from_array(np.zeros((64, 64, 3), np.uint8))
    spots = pipeline == "spot-features"
    extra = {"spot_diameter": 9} if spots else {}
    tensors = {"spot_centres": np.array([[32.0, 32.0]])} if spots else {}
    for model in ("efficientnet-lite0", ""):  # no model: the service's default, EfficientNet-Lite0
        error = _refusal(lambda model=model: stack.client.submit(
            pipeline, image, {"model": model, "layer": "_blocks.99", **extra}, tensors=tensors))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "params.layer: '_blocks.99' is not a layer of model 'efficientnet-lite0'" in error.details()
        assert f"or one of its {len(paths)} module paths" in error.details()
    assert stack.client.list_jobs() == []
    for layer in ("avgpool", paths[len(paths) // 2]):  # a public name and a module path
        stack.client.submit(pipeline, image, {"model": "efficientnet-lite0", "layer": layer, **extra},
                            tensors=tensors)
    assert len(stack.client.list_jobs()) == 2


@pytest.mark.parametrize("patches", [(2, 8, 8, 3), (8, 224, 224, 3)], ids=["small", "detached"])
def test_a_patch_stack_whose_data_does_not_match_its_shape_is_refused_at_submit(
    stack: InProcessStack, patches: tuple[int, ...]
) -> None:
    good = build_request("deep-features", tensor_pb2.Image(), {"model": "efficientnet-lite0"},
                         tensors={"patches": np.zeros(patches, np.uint8)})
    cut = pb.SubmitJobRequest()
    cut.CopyFrom(good)
    cut.input.tensors["patches"].data = good.input.tensors["patches"].data[:-3]
    error = _refusal(lambda: stack.client.submit_request(cut))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"input.tensors[patches].data: {np.prod(patches) - 3} bytes do not match shape" in (
        error.details())
    error = _refusal(lambda: stack.client.submit_batch([good, cut]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[1]" in error.details() and "nothing of this batch was queued" in error.details()
    assert stack.client.list_jobs() == []
