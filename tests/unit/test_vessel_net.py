"""The LabPics vessel-content network: the seed's key layout loads strictly, any size runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from labsight.models import ModelManifest, ModelRepository, Preprocessing, load_torch_model
from services.segmentation.models import vessel_net
from services.segmentation.models.vessel_net import (
    ARCHITECTURE,
    CLASSES,
    OUTPUTS,
    VesselContentNet,
    network_input,
    predict,
    torch_runner,
    working_size,
)


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": ()}


def _conv_bn(prefix: str, out_chs: int, in_chs: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.0.weight": (out_chs, in_chs, k, k), **_bn(f"{prefix}.1", out_chs)}


def seed_layout() -> dict[str, tuple[int, ...]]:
    """The seed's state-dict keys and shapes, written out from its description, not from our module."""
    keys: dict[str, tuple[int, ...]] = {"Encoder.conv1.weight": (64, 3, 7, 7), **_bn("Encoder.bn1", 64)}
    in_chs = 64
    for layer, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), 1):
        width, out_chs = planes * 2, planes * 4  # 32 groups × 4 channels per 64 planes
        for block in range(blocks):
            p = f"Encoder.layer{layer}.{block}"
            keys[f"{p}.conv1.weight"] = (width, in_chs, 1, 1)
            keys.update(_bn(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width // 32, 3, 3)
            keys.update(_bn(f"{p}.bn2", width))
            keys[f"{p}.conv3.weight"] = (out_chs, width, 1, 1)
            keys.update(_bn(f"{p}.bn3", out_chs))
            if block == 0:
                keys[f"{p}.downsample.0.weight"] = (out_chs, in_chs, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", out_chs))
            in_chs = out_chs
    keys["Encoder.fc.weight"], keys["Encoder.fc.bias"] = (1000, 2048), (1000,)
    keys["ROIEncoder.weight"], keys["ROIEncoder.bias"] = (64, 1, 3, 3), (64,)
    for i in range(4):
        keys[f"PSPLayers.{i}.0.weight"], keys[f"PSPLayers.{i}.0.bias"] = (1024, 2048, 3, 3), (1024,)
        keys.update(_conv_bn(f"ASPPLayers.{i}", 512, 2048, 3))
    keys.update(_conv_bn("PSPSqueeze", 512, 4096, 1))
    keys.update(_conv_bn("SqueezeLayers", 512, 2048, 1))
    for i, (out_chs, in_chs) in enumerate(((512, 1024), (256, 512), (128, 256))):
        keys.update(_conv_bn(f"SkipConnections.{i}", out_chs, in_chs, 1))
    for i, (out_chs, in_chs) in enumerate(((512, 1024), (256, 768), (256, 384))):
        keys.update(_conv_bn(f"SqueezeUpsample.{i}", out_chs, in_chs, 3))
    for i in range(10):
        keys[f"InstanceOutLayers.{i}.weight"] = (2, 256, 3, 3)
    for i in range(29):
        keys[f"OutLayersList.{i}.weight"] = (2, 256, 3, 3)
    return keys


@pytest.fixture(scope="module")
def seed_state() -> dict[str, torch.Tensor]:
    """Random weights in the seed's layout, batch-norm statistics plausible."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(4)
    state = {}
    for key, shape in seed_layout().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


def test_class_list_is_the_seeds_in_order() -> None:
    assert len(CLASSES) == 29
    assert CLASSES[:3] == ("Thermometer", "Solid", "PipeTubeStraw")
    assert CLASSES.index("Liquid") == 17 and CLASSES.index("Foam") == 8
    assert CLASSES[-1] == "MaterialOnSurface"


def test_seed_layout_loads_strictly_and_runs_on_an_odd_size(seed_state: dict[str, torch.Tensor]) -> None:
    net = VesselContentNet()
    net.load_state_dict(seed_state, strict=True)
    assert not net.training
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (83, 97, 3), dtype=np.uint8)
    mask = np.zeros((83, 97), np.uint8)
    mask[10:75, 20:80] = 1
    semantic, instances = predict(torch_runner(net), photo, mask)
    assert semantic.shape == (29, 83, 97) and instances.shape == (10, 83, 97)
    assert semantic.dtype == np.float32
    assert np.all((semantic >= 0) & (semantic <= 1)) and np.all((instances >= 0) & (instances <= 1))
    # the loaded mask encoder is wired in: another vessel mask changes the answer
    other, _ = predict(torch_runner(net), photo, np.ones_like(mask))
    assert np.abs(other - semantic).max() > 1e-3


def test_a_missing_or_misnamed_key_does_not_load(seed_state: dict[str, torch.Tensor]) -> None:
    net = VesselContentNet()
    broken = dict(seed_state)
    broken["OutLayersList.29.weight"] = broken.pop("OutLayersList.28.weight")
    with pytest.raises(RuntimeError, match="OutLayersList"):
        net.load_state_dict(broken, strict=True)


def test_the_mask_encoder_starts_as_a_pass_through() -> None:
    net = VesselContentNet(width_factor=0.25)
    batch = torch.randn(1, 4, 64, 64)
    blank = batch.clone()
    blank[:, 3] = 0
    with torch.no_grad():
        assert torch.equal(net(batch)[0], net(blank)[0])


def test_input_is_bgr_centred_and_scaled() -> None:
    photo = np.zeros((2, 3, 3), np.uint8)
    photo[..., 0] = 200  # red
    mask = np.array([[0, 1, 1], [0, 0, 5]])
    batch = network_input(photo, mask)
    assert batch.shape == (1, 4, 2, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 2], (200 - 103.939) / 65, rtol=1e-6)  # red is the 3rd plane
    np.testing.assert_allclose(batch[0, 0], (0 - 123.68) / 65, rtol=1e-6)
    np.testing.assert_array_equal(batch[0, 3], [[0, 1, 1], [0, 0, 1]])


def test_working_size_keeps_sides_between_200_and_1000() -> None:
    assert working_size(3000, 1500) == (1000, 500)
    assert working_size(100, 150) == (200, 300)
    assert working_size(480, 640) == (480, 640)


def test_served_through_the_segmentation_repository(seed_state: dict[str, torch.Tensor],
                                                    tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(seed_state, weights)
    manifest = ModelManifest(
        name="labpics-vessel", version="1", format="state_dict", weights=weights,
        architecture=ARCHITECTURE, task="segmentation", input_channels=4, input_size=(256, 256),
        dynamic_size=True, outputs=OUTPUTS, preprocessing=Preprocessing.identity(4),
        licence="operator-supplied", source="test", origin=str(tmp_path / "manifest.toml"),
    )
    model = load_torch_model(manifest)
    assert not model.training
    assert torch.equal(model.state_dict()["OutLayersList.17.weight"], seed_state["OutLayersList.17.weight"])
    repository = ModelRepository([], task="segmentation", builtins=lambda: [manifest])
    assert [m.name for m in repository.list()] == ["labpics-vessel"]
    assert vessel_net.build_for_manifest(manifest).state_dict().keys() == seed_state.keys()
    with pytest.raises(ValueError, match="input_channels"):
        vessel_net.build_for_manifest(dataclasses.replace(
            manifest, input_channels=3, preprocessing=Preprocessing.identity(3)))
