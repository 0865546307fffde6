"""Turn a released HPA-Cell-Segmentation weight file into a model directory, running none of its code.

The released files (``dpn_unet_nuclei_v1.pth``, ``dpn_unet_cell_3ch_v1.pth``,
Zenodo record 4665863) are whole modules pickled by ``torch.save``: loading
them the usual way imports the authors' ``pytorch_zoo`` package and lets the
pickle call whatever it names. Here a restricted unpickler stands a plain
container in for every module class (the authors' and ``torch.nn``'s) that only
keeps the pickled attributes, allows the few torch functions that rebuild
tensors, and refuses everything else. The parameters and persistent buffers
of the container tree are the module's ``state_dict``; they are checked
strictly against :class:`~services.segmentation.models.hpa_unet.HpaDpnUnet`
and written as ``weights.pt`` beside a ``manifest.toml``::

    python -m services.segmentation.models.convert_hpa dpn_unet_nuclei_v1.pth models/hpa-nuclei
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch._utils

from services.segmentation.models.hpa_unet import (
    ARCHITECTURES,
    CLASSES,
    MEAN,
    MODEL_NAMES,
    STD,
    HpaDpnUnet,
)

KINDS = tuple(ARCHITECTURES)
"""The two released models: nuclei on [blue, blue, blue], cells on [red, yellow, blue]."""

WEIGHTS_FILE = "weights.pt"

MODULE_PACKAGES = ("pytorch_zoo", "hpacellseg", "torch.nn.modules", "torch.nn.parallel")
"""Packages whose pickled classes become :class:`PickledModule` containers."""

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    # Protocol 2, torch.save's, names the builtins module as Python 2 did.
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    # Modules pickled by torch < 1.4 hold a ``_backend`` rebuilt by this call; it stands for nothing.
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): lambda: None,
}
"""The only callables a weight file may name: containers and torch's tensor rebuilders."""


class WeightFileError(ValueError):
    """A weight file cannot be read, names something not allowed, or does not fit the network."""


class PickledModule:
    """Stand-in for a pickled module class: keeps the pickled attributes and runs no code."""

    pickled_state: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledModule:
        instance = super().__new__(cls)
        instance.pickled_state = {}
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Ignore constructor arguments: the pickled state arrives through ``__setstate__``."""

    def __setstate__(self, state: Any) -> None:
        # Objects with slots pickle (dict, slots); modules have none.
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if isinstance(state, dict):
            self.pickled_state = state


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that allows only tensor rebuilding and module containers (see the module text)."""

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for ``module.name``; anything else raises ``UnpicklingError``."""
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if any(module == package or module.startswith(package + ".") for package in MODULE_PACKAGES):
            return _placeholder(module, name)
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: a weight file may only hold modules, tensors and containers"
        )


@functools.cache
def _placeholder(module: str, name: str) -> type[PickledModule]:
    """The container class standing in for ``module.name`` (one class per name)."""
    return type(name, (PickledModule,), {"__module__": module, "__qualname__": name})


def _restricted_load(file: BinaryIO, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load calls its ``pickle_module``: an Unpickler class and a load function.
_restricted_pickle = types.ModuleType("labsight_restricted_pickle")
_restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a weight file: a whole pickled module or a pickled state dict.

    A ``DataParallel`` wrapper's ``module.`` prefix is removed.

    Raises
    ------
    WeightFileError
        If the file cannot be read, names a global outside the allowed ones, or
        holds neither a module nor a mapping of names to tensors.
    """
    try:
        loaded = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle,
                            weights_only=False)
    except pickle.UnpicklingError as error:
        raise WeightFileError(f"{path}: {error}") from None
    except Exception as error:  # whatever a damaged or foreign file makes torch.load raise
        raise WeightFileError(f"{path}: not a readable torch weight file ({error})") from None
    if isinstance(loaded, PickledModule):
        state = _module_state_dict(loaded, "", str(path))
    elif isinstance(loaded, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        state = dict(loaded)
    else:
        raise WeightFileError(
            f"{path}: holds a {type(loaded).__name__}, neither a pickled module nor a state dict"
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _module_state_dict(module: PickledModule, prefix: str, origin: str) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a container tree, named as ``Module.state_dict`` names them."""
    state = module.pickled_state
    skipped = state.get("_non_persistent_buffers_set", set())
    entries = [
        *state.get("_parameters", {}).items(),
        *((name, buffer) for name, buffer in state.get("_buffers", {}).items() if name not in skipped),
    ]
    result: dict[str, torch.Tensor] = {}
    for name, tensor in entries:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise WeightFileError(f"{origin}: {prefix}{name} is a {type(tensor).__name__}, not a tensor")
        result[prefix + name] = tensor.detach()
    for name, child in state.get("_modules", {}).items():
        if child is None:
            continue
        if not isinstance(child, PickledModule):
            raise WeightFileError(f"{origin}: {prefix}{name} is a {type(child).__name__}, not a module")
        result.update(_module_state_dict(child, f"{prefix}{name}.", origin))
    return result


def load_network(state: Mapping[str, torch.Tensor], origin: str) -> HpaDpnUnet:
    """The network in evaluation mode with ``state`` loaded strictly.

    Raises
    ------
    WeightFileError
        If keys are missing or unexpected or a shape differs, naming a few of them.
    """
    network = HpaDpnUnet()
    expected = network.state_dict()
    # Files saved before batch norm counted its batches lack only those counters (loading adds them).
    missing = sorted(key for key in set(expected) - set(state) if not key.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or wrong:
        raise WeightFileError(
            f"{origin}: not the HPA DPN-92 U-Net: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of another shape {wrong[:3]}"
        )
    network.load_state_dict(dict(state), strict=True)
    return network.eval()


def manifest_text(*, name: str, kind: str, source: str) -> str:
    """The ``manifest.toml`` of a converted model (TOML written by hand: the fields are fixed)."""
    mean = ", ".join(f"{value:.6f}" for value in MEAN)
    std = ", ".join(f"{value:.6f}" for value in STD)
    classes = ", ".join(f'"{label}"' for label in CLASSES)
    return (
        f'name = "{name}"\n'
        'version = "1"\n'
        'format = "state_dict"\n'
        f'weights = "{WEIGHTS_FILE}"\n'
        f'architecture = "{ARCHITECTURES[kind]}"\n'
        'task = "segmentation"\n'
        "input_channels = 3\n"
        "input_size = [512, 512]\n"
        "dynamic_size = true\n"
        'outputs = ["logits"]\n'
        f"classes = [{classes}]\n"
        f"num_classes = {len(CLASSES)}\n"
        'licence = "CC-BY-4.0"\n'
        f"source = {_toml_string(source)}\n"
        "\n[preprocessing]\n"
        f"mean = [{mean}]\n"
        f"std = [{std}]\n"
    )


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def guess_kind(path: Path) -> str:
    """``nuclei`` or ``cell`` from a released file's name; ValueError when the name says neither."""
    stem = path.name.lower()
    if "nuclei" in stem or "nucleus" in stem:
        return "nuclei"
    if "cell" in stem:
        return "cell"
    raise ValueError(f"kind: cannot tell from {path.name!r} whether it is the nuclei or the cell "
                     "model; pass --kind nuclei or --kind cell")


def convert(source: Path, destination: Path, *, kind: str | None = None,
            name: str | None = None) -> Path:
    """Write ``weights.pt`` and ``manifest.toml`` of a released weight file into ``destination``.

    Parameters
    ----------
    source : Path
        ``dpn_unet_nuclei_v1.pth``, ``dpn_unet_cell_3ch_v1.pth`` or a state dict of the same keys.
    destination : Path
        The model's directory (created), e.g. ``$LABSIGHT_MODEL_DIR/hpa-nuclei``.
    kind : {"nuclei", "cell"}, optional
        Which model it is; guessed from the file name when omitted.
    name : str, optional
        The model's name in the repository; ``hpa-nuclei`` or ``hpa-cell`` when omitted.

    Returns
    -------
    Path
        The written manifest.

    Raises
    ------
    WeightFileError
        If the file is unreadable, unsafe or not this network.
    ValueError
        If ``kind`` is unknown or cannot be guessed.
    """
    kind = kind or guess_kind(source)
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {list(KINDS)}")
    network = load_network(read_state_dict(source), str(source))
    with source.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    destination.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), destination / WEIGHTS_FILE)
    manifest = destination / "manifest.toml"
    manifest.write_text(manifest_text(
        name=name or MODEL_NAMES[kind],
        kind=kind,
        source=f"HPA-Cell-Segmentation {source.name} (sha256 {digest}; Zenodo record 4665863), "
               "converted by labsight convert-hpa-weights",
    ))
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's command-line arguments (shared by ``python -m`` and ``labsight``)."""
    parser.add_argument("source", type=Path, help="released weight file, e.g. dpn_unet_nuclei_v1.pth")
    parser.add_argument("destination", type=Path,
                        help="model directory to write (weights.pt, manifest.toml)")
    parser.add_argument("--kind", choices=KINDS, help="nuclei or cell (default: from the file name)")
    parser.add_argument("--name", help="model name in the repository (default: hpa-nuclei or hpa-cell)")


def run(args: argparse.Namespace) -> int:
    """Convert as the parsed arguments say; print the manifest's path, or the error (exit 1)."""
    try:
        manifest = convert(args.source, args.destination, kind=args.kind, name=args.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m services.segmentation.models.convert_hpa SRC.pth DST_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m services.segmentation.models.convert_hpa",
        description="Convert a released HPA-Cell-Segmentation weight file to a LabSight model directory.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
