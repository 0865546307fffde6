"""The Cellpose-style flow network, its ONNX form, and the flow-following post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labsight.errors import InvalidArgument
from labsight.models import ModelRepository, ModelServer, ServingConfig, load_torch_model
from labsight.segmentation_metrics import score_segmentation
from services.segmentation import flows
from services.segmentation.models.flow_models import (
    FLOW_OUTPUT,
    SEGMENTATION_TASK,
    FlowPredictor,
    builtin_flow_manifests,
)
from services.segmentation.models.flow_net import VARIANTS, FlowNet

MANIFESTS = {manifest.name: manifest for manifest in builtin_flow_manifests()}
needs_weights = pytest.mark.skipif(not MANIFESTS, reason="the scellseg weight package is not installed")


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for index, (y, x) in enumerate(centres, start=1):
        labels[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = index
    return labels


def _pointwise(batch: np.ndarray) -> np.ndarray:
    """A stand-in network whose output at a pixel depends on that pixel only: the input holds
    the unit flows, the output is 5× them and a logit of +5 where they are non-zero."""
    inside = (batch[:, 0] ** 2 + batch[:, 1] ** 2) > 0
    return np.concatenate([5 * batch, np.where(inside, 5.0, -5.0)[:, None]], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def server(model_cache: Path) -> ModelServer:
    repository = ModelRepository((), task=SEGMENTATION_TASK, builtins=builtin_flow_manifests)
    return ModelServer(repository, ServingConfig(cache_dir=model_cache, device="cpu", threads=1, instances=1))


@needs_weights
@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_packaged_weights_load_strictly(name: str) -> None:
    state = torch.load(MANIFESTS[name].weights, map_location="cpu", weights_only=True)
    net = FlowNet(name.removesuffix("-flow"))
    assert net.load_state_dict(state, strict=True)
    assert len(state) == len(net.state_dict())


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        FlowNet("unet")
    assert VARIANTS == ("cellpose", "scellseg")


@needs_weights
def test_onnx_runtime_matches_torch_on_any_size(server: ModelServer) -> None:
    torch.set_num_threads(1)
    manifest = MANIFESTS["scellseg-flow"]
    net = load_torch_model(manifest)
    batch = np.random.default_rng(0).random((2, 2, 48, 72), dtype=np.float32)
    onnx = FlowPredictor(server, manifest.name)(batch)
    with torch.inference_mode():
        expected = net(torch.from_numpy(batch)).numpy()
    assert onnx.shape == (2, 3, 48, 72)
    np.testing.assert_allclose(onnx, expected, atol=1e-4)
    assert server.run(manifest.name, batch)[FLOW_OUTPUT].shape == onnx.shape


def test_following_the_flows_of_two_discs_gives_the_two_discs() -> None:
    truth = _discs((90, 130), [(40, 40), (50, 95)], 18)
    output = np.concatenate([5 * flows.masks_to_flows(truth), np.where(truth > 0, 5.0, -5.0)[None]])
    labels = flows.flows_to_labels(output)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    assert score_segmentation(labels, truth, [0.95]).average_precision(0.95) == 1.0


def test_flow_error_is_small_for_a_masks_own_flows_and_large_for_reversed_ones() -> None:
    truth = _discs((80, 80), [(40, 40)], 15)
    own = flows.masks_to_flows(truth)
    assert flows.flow_errors(truth, own)[0] < 1e-6
    assert flows.flow_errors(truth, -own)[0] > 3.0


def test_tiles_of_an_odd_non_square_image_give_the_untiled_masks() -> None:
    truth = _discs((301, 457), [(60, 60), (150, 230), (250, 400), (40, 300), (270, 100)], 22)
    planes = flows.masks_to_flows(truth)
    tiled = flows.predict_tiled(planes, _pointwise, tile=224)
    whole = flows.predict_tiled(planes, _pointwise, tile=464)
    np.testing.assert_allclose(tiled, _pointwise(planes[None])[0], atol=1e-5)
    np.testing.assert_allclose(whole, tiled, atol=1e-5)
    labels = flows.flows_to_labels(tiled)
    np.testing.assert_array_equal(labels, flows.flows_to_labels(whole))
    assert score_segmentation(labels, truth, [0.9]).average_precision(0.9) == 1.0


def test_small_objects_are_removed_by_physical_area() -> None:
    truth = _discs((120, 120), [(30, 30), (80, 80)], 12)
    truth[(np.indices(truth.shape)[0] - 100) ** 2 + (np.indices(truth.shape)[1] - 20) ** 2 <= 9] = 3
    output = np.concatenate([5 * flows.masks_to_flows(truth), np.where(truth > 0, 5.0, -5.0)[None]])
    assert flows.flows_to_labels(output, min_area_px=0).max() == 3
    # 0.5 µm pixels: the small disc is 29 px = 7 µm², the others 113 µm²; 20 µm² is 80 px
    assert flows.flows_to_labels(output, min_area_px=20.0 / 0.5**2).max() == 2


@needs_weights
def test_nuclei_of_8_and_16_bit_images_are_found_alike(server: ModelServer) -> None:
    truth = _discs((160, 200), [(40, 50), (45, 140), (115, 60), (110, 150)], 14)
    rng = np.random.default_rng(1)
    smooth = np.where(truth > 0, 180.0, 20.0)
    image8 = np.clip(smooth + rng.normal(0, 8, truth.shape), 0, 255).astype(np.uint8)
    image16 = image8.astype(np.uint16) * 257
    predict = FlowPredictor(server, "scellseg-flow")
    options = {"pixel_size_um": 0.5, "nucleus_diameter_um": 14.0, "predict": predict}
    labels8 = flows.segment_nuclei_flows(image8, **options)
    labels16 = flows.segment_nuclei_flows(image16, **options)
    np.testing.assert_array_equal(labels8, labels16)
    assert score_segmentation(labels16, truth, [0.5]).average_precision(0.5) == 1.0


def test_flat_image_gives_no_nuclei_without_running_a_network() -> None:
    def refuse(_batch: np.ndarray) -> np.ndarray:
        raise AssertionError("the network ran on a flat image")

    labels = flows.segment_nuclei_flows(np.zeros((50, 70), np.uint16), pixel_size_um=0.3, predict=refuse)
    assert labels.shape == (50, 70) and labels.dtype == np.int32 and not labels.any()


def test_bad_arguments_name_their_field() -> None:
    with pytest.raises(InvalidArgument, match="nuclei"):
        flows.segment_nuclei_flows(np.zeros((4, 4, 3)), pixel_size_um=1.0, predict=_pointwise)
    with pytest.raises(InvalidArgument, match="pixel_size_um"):
        flows.segment_nuclei_flows(np.zeros((4, 4)), pixel_size_um=0.0, predict=_pointwise)
    with pytest.raises(InvalidArgument, match="er"):
        flows.segment_cells_flows(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4)), pixel_size_um=1.0,
                                  nuclei_predict=_pointwise, cells_predict=_pointwise)


def test_each_nucleus_gets_a_cell_with_its_id() -> None:
    nuclei = _discs((100, 160), [(50, 30), (50, 70), (50, 130)], 8)
    cells = np.zeros_like(nuclei)
    cells[20:80, 5:100] = 7      # one cell around nuclei 1 and 2: split between them
    cells[85:100, 120:160] = 9   # a cell without a nucleus: dropped
    matched_nuclei, matched_cells = flows.match_cells_to_nuclei(nuclei, cells)
    np.testing.assert_array_equal(matched_nuclei, nuclei)
    assert set(np.unique(matched_cells)) == {0, 1, 2, 3}
    for label in (1, 2, 3):
        assert np.all(matched_cells[nuclei == label] == label)
    # nucleus 3 had no cell: its cell is the nucleus
    np.testing.assert_array_equal(matched_cells == 3, nuclei == 3)
    # the shared cell is split near the middle between the nuclei (x = 50)
    assert np.all(matched_cells[50, 5:45] == 1) and np.all(matched_cells[50, 56:100] == 2)
