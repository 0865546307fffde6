"""The HPA DPN-92 U-Net: its layout, and released-style pickled modules converted without their code."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.backends import thnn

from labsight.models import ModelRepository, load_manifest, load_torch_model
from services.segmentation.hpa import segment_cells_hpa
from services.segmentation.models import hpa_unet
from services.segmentation.models.convert_hpa import (
    WEIGHTS_FILE,
    WeightFileError,
    main,
    read_state_dict,
)
from services.segmentation.models.hpa_unet import MEAN, STD, HpaDpnUnet

FAKE_PACKAGE = "pytorch_zoo"
"""The authors' package, which this machine does not have: the test makes one up to pickle with."""

FAKE_CLASSES = {
    hpa_unet.HpaDpnUnet: ("pytorch_zoo.unet", "DPNUnet"),
    hpa_unet.UnetDecoderBlock: ("pytorch_zoo.unet", "UnetDecoderBlock"),
    hpa_unet.ConvBottleneck: ("pytorch_zoo.unet", "ConvBottleneck"),
    hpa_unet.DualPathBlock: ("pytorch_zoo.dpn", "DualPathBlock"),
    hpa_unet.BnActConv2d: ("pytorch_zoo.dpn", "BnActConv2d"),
    hpa_unet.CatBnAct: ("pytorch_zoo.dpn", "CatBnAct"),
}
"""Each class of ours and the authors' class that holds the same parameters."""


@pytest.fixture(scope="module")
def network() -> HpaDpnUnet:
    """The network with random weights and random batch-norm statistics, in evaluation mode."""
    torch.set_num_threads(1)
    torch.manual_seed(12)
    model = HpaDpnUnet()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000)
    return model.eval()


@pytest.fixture(scope="module")
def released_file(network: HpaDpnUnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole pickled module as the authors saved theirs: their classes, wrapped in DataParallel.

    Their package exists only while pickling; it is gone from ``sys.modules`` afterwards.
    """
    path = tmp_path_factory.mktemp("released") / "dpn_unet_nuclei_v1.pth"
    with _fake_package() as classes:
        torch.save(nn.DataParallel(_authors_tree(network, classes)), path)
    assert FAKE_PACKAGE not in sys.modules
    return path


def test_network_has_the_released_layout(network: HpaDpnUnet) -> None:
    state = network.state_dict()
    assert sum(p.numel() for p in network.parameters()) == pytest.approx(139e6, rel=0.01)
    assert state["encoder_stages.0.0.weight"].shape == (64, 3, 7, 7)
    assert state["encoder_stages.1.1.c1x1_w_s1.conv.weight"].shape == (256 + 2 * 16, 64, 1, 1)
    assert state["encoder_stages.2.0.c1x1_w_s2.conv.weight"].shape == (512 + 2 * 32, 336, 1, 1)
    assert state["encoder_stages.3.19.c3x3_b.conv.weight"].shape == (384, 384 // 32, 3, 3)
    assert state["encoder_stages.4.2.c3x3_b.conv.weight"].shape == (768, 768 // 32, 3, 3)
    assert state["encoder_stages.4.3.bn.running_var"].shape == (2688,)
    assert state["decoder_stages.3.layer.1.weight"].shape == (1552, 2688, 3, 3)
    assert state["bottlenecks.0.seq.0.weight"].shape == (1552, 1552 + 1552, 3, 3)
    assert state["bottlenecks.3.seq.0.weight"].shape == (64, 64 + 64, 3, 3)
    assert state["final.0.weight"].shape == (3, 64, 1, 1)
    widths = []
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for stage in network.encoder_stages:
            x = stage(x)
            widths.append((x.shape[1], x.shape[2]))
    assert widths == [(64, 32), (336, 16), (704, 8), (1552, 4), (2688, 2)]


class _TorchEngine:
    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.network(torch.from_numpy(batch)).numpy()


def test_segmentation_runs_the_network_on_an_odd_image(network: HpaDpnUnet) -> None:
    rng = np.random.default_rng(5)
    red, yellow, blue = (rng.integers(0, 65536, (203, 141), dtype=np.uint16) for _ in range(3))
    engine = _TorchEngine(network)
    nuclei, cells = segment_cells_hpa(red, yellow, blue, pixel_size_um=0.08,
                                      nuclei_engine=engine, cell_engine=engine)
    assert nuclei.shape == cells.shape == (203, 141)
    assert nuclei.dtype == cells.dtype == np.int32


def test_released_file_needs_the_authors_package(released_file: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match=FAKE_PACKAGE):
        torch.load(released_file, weights_only=False)


def test_converted_weights_load_strictly_and_compute_the_same(
    network: HpaDpnUnet, released_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "hpa-nuclei"
    assert main([str(released_file), str(destination)]) == 0
    assert capsys.readouterr().out.strip() == str(destination / "manifest.toml")

    manifest = ModelRepository([tmp_path], task="segmentation").get("hpa-nuclei")
    assert manifest == load_manifest(destination / "manifest.toml")
    assert manifest.architecture == "hpa-dpn92-unet-nuclei"
    assert manifest.weights == destination / WEIGHTS_FILE
    assert (manifest.input_channels, manifest.dynamic_size, manifest.outputs) == (3, True, ("logits",))
    assert manifest.classes == ("background", "border", "interior")
    assert manifest.licence == "CC-BY-4.0"
    assert manifest.preprocessing.mean == pytest.approx(MEAN, abs=1e-6)
    assert manifest.preprocessing.std == pytest.approx(STD, abs=1e-6)
    assert manifest.preprocessing.std[0] == pytest.approx(0.2348, abs=1e-4)
    assert released_file.name in manifest.source
    converted = load_torch_model(manifest)  # strict
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = network(images)
        got = converted(images)
    assert expected.std() > 0
    assert torch.equal(got, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_torchscript_export_loads_directly_through_the_repository(network: HpaDpnUnet,
                                                                   tmp_path: Path) -> None:
    # A bioimage.io-style export: the traced network, here ending with its softmax.
    model_dir = tmp_path / "hpa-cell"
    model_dir.mkdir()
    exported = nn.Sequential(network, nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        torch.jit.trace(exported, torch.rand(1, 3, 64, 64)).save(str(model_dir / "model.pt"))
    (model_dir / "manifest.toml").write_text(
        'name = "hpa-cell"\nversion = "1"\nformat = "torchscript"\nweights = "model.pt"\n'
        'task = "segmentation"\ninput_size = [512, 512]\ndynamic_size = true\n'
        'outputs = ["probabilities"]\nlicence = "CC-BY-4.0"\nsource = "bioimage.io 10.5281/zenodo.6200635"\n'
    )
    module = load_torch_model(ModelRepository([tmp_path], task="segmentation").get("hpa-cell"))
    images = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.allclose(module(images), exported(images), atol=1e-6)


def test_file_naming_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "dpn_unet_cell_3ch_v1.pth"
    torch.save({"encoder_stages.0.0.weight": torch.zeros(1), "hook": _RunsCommand(f"touch {marker}")}, path)
    with pytest.raises(WeightFileError, match=r"refusing (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_file_of_another_network_is_refused_naming_keys(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dpn_unet_cell_3ch_v1.pth"
    with _fake_package() as classes:
        other = classes[hpa_unet.HpaDpnUnet]()
        other.add_module("head", nn.Conv2d(3, 3, 1))
        torch.save(other, path)
    assert main([str(path), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "not the HPA DPN-92 U-Net" in error
    assert "head.weight" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_file_in_the_format_before_torch_1_6_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dpn_unet_nuclei_v1.pth"
    norm = nn.BatchNorm2d(4)
    norm.running_mean.uniform_()
    with _fake_package() as classes:
        block = classes[hpa_unet.CatBnAct]()
        block._backend = _LegacyBackend()
        block.add_module("bn", norm)
        torch.save(nn.DataParallel(block), path, _use_new_zipfile_serialization=False)
    state = read_state_dict(path)
    assert list(state) == [f"bn.{key}" for key in norm.state_dict()]
    assert torch.equal(state["bn.running_mean"], norm.running_mean)


def test_damaged_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dpn_unet_nuclei_v1.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(WeightFileError, match="dpn_unet_nuclei_v1.pth: not a readable torch weight file"):
        read_state_dict(path)


def test_kind_must_be_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "weights.pth"), str(tmp_path / "out")]) == 1
    assert "--kind" in capsys.readouterr().err


class _LegacyBackend:
    """Pickles as torch < 1.4 pickled a module's ``_backend``."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return thnn._get_thnn_function_backend, ()


class _RunsCommand:
    """Pickles as a call to os.system, what a hostile weight file would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


@contextmanager
def _fake_package() -> Iterator[dict[type, type[nn.Module]]]:
    """Registers ``pytorch_zoo.unet`` and ``pytorch_zoo.dpn`` with module classes; removes them after.

    Yields our classes' counterparts among them.
    """
    names = [FAKE_PACKAGE, *sorted({module for module, _ in FAKE_CLASSES.values()})]
    modules = {name: types.ModuleType(name) for name in names}
    classes: dict[type, type[nn.Module]] = {}
    for ours, (module, name) in FAKE_CLASSES.items():
        cls = type(name, (nn.Module,), {"__module__": module, "__qualname__": name})
        setattr(modules[module], name, cls)
        classes[ours] = cls
    sys.modules.update(modules)
    try:
        yield classes
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _authors_tree(module: nn.Module, classes: dict[type, type[nn.Module]]) -> nn.Module:
    """The same parameters in a tree of the authors' classes (a plain Sequential for a stage)."""
    if isinstance(module, hpa_unet.EncoderStage):
        copy: nn.Module = nn.Sequential()
    elif type(module) in classes:
        copy = classes[type(module)]()
        # Plain attributes the authors' modules carry beside their parameters, and the
        # backend object every module of torch < 1.4 pickled.
        copy.key_stride = getattr(module, "stride", 1)
        copy.b = False
        copy._backend = _LegacyBackend()
    elif isinstance(module, nn.ModuleList | nn.Sequential):
        copy = type(module)()
    else:
        return module
    for name, parameter in module._parameters.items():
        copy.register_parameter(name, parameter)
    for name, buffer in module._buffers.items():
        copy.register_buffer(name, buffer)
    for name, child in module.named_children():
        copy.add_module(name, _authors_tree(child, classes))
    return copy
