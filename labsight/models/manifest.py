"""A model's manifest: what the weights are, how to feed the model, its outputs and layers.

An operator's model is a directory with a ``manifest.toml`` and its weights::

    name = "cells-effnet"
    version = "3"
    format = "state_dict"                 # onnx | torchscript | state_dict | torchserve | tfserving
    weights = "weights.pt"                # relative to this directory
    architecture = "efficientnet-lite0"   # state_dict only: a registered architecture
    task = "features"                     # the service that serves it; default "features"
    num_classes = 5                       # state_dict only; default 1000
    classes = ["a", "b", "c", "d", "e"]   # optional class names
    input_channels = 3                    # default 3
    input_size = [224, 224]               # height, width (traced at export; the tile size)
    dynamic_size = false                  # true: any height and width (fully convolutional)
    outputs = ["output"]                  # names of the model's outputs, in order
    default_layer = "avgpool"             # optional; "" (the default) is the model's outputs
    licence = "CC-BY-4.0"
    source = "fine-tuned by labsight train-features on lab images, 2025-01-01"

    [preprocessing]                       # optional: pixels scaled to [0, 1], then (x - mean) / std
    mean = [0.498, 0.498, 0.498]          # one value per input channel
    std = [0.502, 0.502, 0.502]

    [layers]                              # optional: public name = module path ("" = the outputs)
    avgpool = "_avg_pooling"
    logits = "_fc"

A ``torchserve`` or ``tfserving`` model runs on an external server: it has no
weights and a ``[remote]`` table instead (see :mod:`labsight.remote.spec`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsight.remote.spec import REMOTE_FORMATS, RemoteSpec, remote_spec

FORMATS = ("onnx", "torchscript", "state_dict", *REMOTE_FORMATS)
"""Weight formats a manifest may name."""

MANIFEST_FILE = "manifest.toml"

DEFAULT_TASK = "features"
"""The task of a manifest that names none (manifests written before tasks existed)."""

DEFAULT_OUTPUTS = ("output",)
"""The output names of a manifest that names none: one output."""


class ManifestError(ValueError):
    """A manifest is unreadable or a field is missing or wrong; the message names file and field."""


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel normalisation applied to pixels scaled to [0, 1] by their dtype's range."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> Preprocessing:
        """No normalisation: mean 0 and std 1 on each of ``channels`` channels."""
        return cls(mean=(0.0,) * channels, std=(1.0,) * channels)


@dataclass(frozen=True, kw_only=True)
class ModelManifest:
    """Everything needed to load a model, feed it and name its outputs and layers.

    Attributes
    ----------
    name, version : str
        The model's name in its repository and its version.
    format : {"onnx", "torchscript", "state_dict", "torchserve", "tfserving"}
        How the weights are stored, or the external server that runs the model.
    weights : Path
        The weight file; a remote model has none and names its manifest file (so
        that checks for present weights pass and its digest follows the manifest).
    input_size : tuple of int
        (height, width) of the input: the only size a fixed-size model takes,
        the size traced at ONNX export and the natural tile size of a
        ``dynamic_size`` model.
    preprocessing : Preprocessing
        Normalisation, one mean and std per input channel.
    licence, source : str
        Where the weights come from, for model cards and ``ListModels``.
    task : str
        The service that serves the model ("features", "segmentation", ...); a
        repository lists only the models of its task.
    input_channels : int
        Channels of the (N, C, H, W) input.
    dynamic_size : bool
        Whether the model takes any height and width (fully convolutional); the
        ONNX export then leaves both axes free.
    outputs : tuple of str
        Names of the model's outputs, in the order the network returns them.
    layers : dict of str to str
        Public layer name → module path ("" is the model's outputs).
    default_layer : str
        Layer served when a request names none ("": the model's outputs).
    architecture : str
        Registered architecture of a ``state_dict`` manifest.
    num_classes : int
        Classes of the architecture's final layer (``state_dict``).
    classes : tuple of str
        Optional class names.
    remote : RemoteSpec or None
        Endpoint and call of a ``torchserve`` or ``tfserving`` model.
    origin : str
        The manifest file, or "built-in".
    """

    name: str
    version: str
    format: str
    weights: Path
    input_size: tuple[int, int]
    preprocessing: Preprocessing
    licence: str
    source: str
    task: str = DEFAULT_TASK
    input_channels: int = 3
    dynamic_size: bool = False
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    layers: dict[str, str] = field(default_factory=dict)
    default_layer: str = ""
    architecture: str = ""
    num_classes: int = 1000
    classes: tuple[str, ...] = ()
    remote: RemoteSpec | None = None
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.origin or self.name
        if self.format not in FORMATS:
            raise ManifestError(f"{where}: format: {self.format!r} is not one of {list(FORMATS)}")
        if self.input_channels < 1:
            raise ManifestError(f"{where}: input_channels: must be >= 1, got {self.input_channels}")
        if min(self.input_size) < 1:
            raise ManifestError(f"{where}: input_size: sides must be >= 1, got {list(self.input_size)}")
        for name in ("mean", "std"):
            values = getattr(self.preprocessing, name)
            if len(values) != self.input_channels:
                raise ManifestError(
                    f"{where}: preprocessing.{name}: expected {self.input_channels} values "
                    f"(one per input channel), got {list(values)}"
                )
        if min(self.preprocessing.std) <= 0:
            raise ManifestError(
                f"{where}: preprocessing.std: must be > 0, got {list(self.preprocessing.std)}"
            )
        if not self.outputs or len(set(self.outputs)) != len(self.outputs) or not all(self.outputs):
            raise ManifestError(
                f"{where}: outputs: expected distinct non-empty names, got {list(self.outputs)}"
            )
        if self.default_layer and self.default_layer not in self.layers:
            raise ManifestError(
                f"{where}: default_layer: {self.default_layer!r} is not one of the [layers] "
                f"{sorted(self.layers)}"
            )
        if self.format == "state_dict" and not self.architecture:
            raise ManifestError(f"{where}: architecture: expected a non-empty string, got ''")
        if (self.format in REMOTE_FORMATS) != (self.remote is not None):
            raise ManifestError(
                f"{where}: remote: required with (and only with) formats {list(REMOTE_FORMATS)}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input."""
        return (self.input_channels, *self.input_size)

    def module_path(self, layer: str) -> str:
        """The module path of a public layer name; other names are taken as module paths."""
        return self.layers.get(layer, layer)

    def digest(self) -> str:
        """SHA-256 over the manifest's fields and the weight file's size and mtime.

        Changes whenever the manifest or the weights do, so caches keyed by it
        (exported ONNX files) never serve stale models.
        """
        stat = self.weights.stat()
        fields: dict[str, Any] = {
            "name": self.name, "version": self.version, "format": self.format,
            "weights": str(self.weights), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "architecture": self.architecture, "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }
        # Fields that change the export; left out at their defaults so that files exported
        # before they existed stay valid.
        if self.input_channels != 3:
            fields["input_channels"] = self.input_channels
        if self.dynamic_size:
            fields["dynamic_size"] = True
        if self.outputs != DEFAULT_OUTPUTS:
            fields["outputs"] = list(self.outputs)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def weights_description(self) -> str:
        """Where the weights come from and their licence, in one line."""
        return f"{self.source} (licence: {self.licence})"


def load_manifest(path: Path) -> ModelManifest:
    """Read and check a ``manifest.toml``; relative weight paths resolve against its directory.

    Raises
    ------
    ManifestError
        If the file is not valid TOML or a field is missing or wrong.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"{path}: cannot read manifest ({error})") from None
    return manifest_from_dict(data, path.parent, str(path))


def manifest_from_dict(data: dict[str, Any], base_dir: Path, origin: str) -> ModelManifest:
    """Check a manifest's fields and build it; ``origin`` names the source in errors."""
    reader = _Fields(data, origin)
    fmt = reader.text("format")
    if fmt not in FORMATS:
        raise ManifestError(f"{origin}: format: {fmt!r} is not one of {list(FORMATS)}")
    architecture = reader.text("architecture", required=fmt == "state_dict")
    layers = reader.table("layers") if "layers" in data or "default_layer" in data else {}
    if not all(isinstance(value, str) for value in layers.values()):
        raise ManifestError(f"{origin}: layers: every value must be a module path string")
    default_layer = reader.text("default_layer", required=False)
    if default_layer and default_layer not in layers:
        raise ManifestError(
            f"{origin}: default_layer: {default_layer!r} is not one of the [layers] {sorted(layers)}"
        )
    channels = reader.integer("input_channels", 3)
    input_size = reader.numbers("input_size", 2, int)
    if min(input_size) < 1:
        raise ManifestError(f"{origin}: input_size: sides must be >= 1, got {list(input_size)}")
    if "preprocessing" in data:
        pre = _Fields(reader.table("preprocessing"), f"{origin}: preprocessing")
        std = pre.numbers("std", channels, float)
        if min(std) <= 0:
            raise ManifestError(f"{origin}: preprocessing.std: must be > 0, got {list(std)}")
        preprocessing = Preprocessing(mean=pre.numbers("mean", channels, float), std=std)
    else:
        preprocessing = Preprocessing.identity(channels)
    outputs = data.get("outputs", list(DEFAULT_OUTPUTS))
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise ManifestError(f"{origin}: outputs: expected a list of strings")
    dynamic_size = data.get("dynamic_size", False)
    if not isinstance(dynamic_size, bool):
        raise ManifestError(f"{origin}: dynamic_size: expected true or false, got {dynamic_size!r}")
    remote = None
    if fmt in REMOTE_FORMATS:
        try:
            remote = remote_spec(fmt, data.get("remote"), reader.text("name"), tuple(outputs), origin)
        except ValueError as error:
            raise ManifestError(str(error)) from None
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ManifestError(f"{origin}: classes: expected a list of strings")
    num_classes = reader.integer("num_classes", len(classes) or 1000)
    return ModelManifest(
        name=reader.text("name"),
        version=reader.text("version"),
        format=fmt,
        weights=(base_dir / (reader.text("weights") if remote is None else MANIFEST_FILE)).resolve(),
        input_size=(int(input_size[0]), int(input_size[1])),
        preprocessing=preprocessing,
        licence=reader.text("licence"),
        source=reader.text("source"),
        task=reader.text("task", required=False) or DEFAULT_TASK,
        input_channels=channels,
        dynamic_size=dynamic_size,
        outputs=tuple(outputs),
        layers=dict(layers),
        default_layer=default_layer,
        architecture=architecture,
        num_classes=num_classes,
        classes=tuple(classes),
        remote=remote,
        origin=origin,
    )


class _Fields:
    """Typed access to a manifest table with errors that name the file and field."""

    def __init__(self, data: dict[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin

    def text(self, name: str, required: bool = True) -> str:
        value = self.data.get(name, "")
        if not isinstance(value, str) or (required and not value):
            raise ManifestError(f"{self.origin}: {name}: expected a non-empty string, got {value!r}")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ManifestError(f"{self.origin}: {name}: expected a positive integer, got {value!r}")
        return value

    def table(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        if not isinstance(value, dict):
            raise ManifestError(f"{self.origin}: [{name}]: missing table")
        return value

    def numbers(self, name: str, count: int, kind: type) -> tuple[Any, ...]:
        value = self.data.get(name)
        ok_types = (int,) if kind is int else (int, float)
        if (
            not isinstance(value, list)
            or len(value) != count
            or not all(isinstance(v, ok_types) and not isinstance(v, bool) for v in value)
        ):
            raise ManifestError(
                f"{self.origin}: {name}: expected {count} {kind.__name__} values, got {value!r}"
            )
        return tuple(kind(v) for v in value)
