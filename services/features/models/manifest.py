"""A model's manifest: what the weights are, how to feed the model and which layers it offers.

An operator's model is a directory with a ``manifest.toml`` and its weights::

    name = "cells-effnet"
    version = "3"
    format = "state_dict"                 # onnx | torchscript | state_dict
    weights = "weights.pt"                # relative to this directory
    architecture = "efficientnet-lite0"   # state_dict only
    num_classes = 5                       # state_dict only; default 1000
    classes = ["a", "b", "c", "d", "e"]   # optional class names
    input_size = [224, 224]               # height, width
    default_layer = "avgpool"
    licence = "CC-BY-4.0"
    source = "fine-tuned by labsight train-features on lab images, 2025-01-01"

    [preprocessing]                       # pixels scaled to [0, 1], then (x - mean) / std
    mean = [0.498, 0.498, 0.498]
    std = [0.502, 0.502, 0.502]

    [layers]                              # public name = module path ("" = the model's output)
    avgpool = "_avg_pooling"
    logits = "_fc"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "torchscript", "state_dict")
"""Weight formats a manifest may name."""

MANIFEST_FILE = "manifest.toml"


class ManifestError(ValueError):
    """A manifest is unreadable or a field is missing or wrong; the message names file and field."""


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel normalisation applied to pixels scaled to [0, 1] by their dtype's range."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ModelManifest:
    """Everything needed to load a model, feed it and name its layers."""

    name: str
    version: str
    format: str
    weights: Path
    input_size: tuple[int, int]
    preprocessing: Preprocessing
    layers: dict[str, str]
    default_layer: str
    licence: str
    source: str
    architecture: str = ""
    num_classes: int = 1000
    classes: tuple[str, ...] = ()
    origin: str = field(default="", compare=False)

    def module_path(self, layer: str) -> str:
        """The module path of a public layer name; other names are taken as module paths."""
        return self.layers.get(layer, layer)

    def digest(self) -> str:
        """SHA-256 over the manifest's fields and the weight file's size and mtime.

        Changes whenever the manifest or the weights do, so caches keyed by it
        (exported ONNX files) never serve stale models.
        """
        stat = self.weights.stat()
        fields = {
            "name": self.name, "version": self.version, "format": self.format,
            "weights": str(self.weights), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "architecture": self.architecture, "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }
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
    layers = reader.table("layers")
    if not all(isinstance(value, str) for value in layers.values()):
        raise ManifestError(f"{origin}: layers: every value must be a module path string")
    default_layer = reader.text("default_layer")
    if default_layer not in layers:
        raise ManifestError(
            f"{origin}: default_layer: {default_layer!r} is not one of the [layers] {sorted(layers)}"
        )
    input_size = reader.numbers("input_size", 2, int)
    if min(input_size) < 1:
        raise ManifestError(f"{origin}: input_size: sides must be >= 1, got {list(input_size)}")
    pre = _Fields(reader.table("preprocessing"), f"{origin}: preprocessing")
    std = pre.numbers("std", 3, float)
    if min(std) <= 0:
        raise ManifestError(f"{origin}: preprocessing.std: must be > 0, got {list(std)}")
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ManifestError(f"{origin}: classes: expected a list of strings")
    num_classes = data.get("num_classes", len(classes) or 1000)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ManifestError(f"{origin}: num_classes: expected a positive integer, got {num_classes!r}")
    return ModelManifest(
        name=reader.text("name"),
        version=reader.text("version"),
        format=fmt,
        weights=(base_dir / reader.text("weights")).resolve(),
        input_size=(int(input_size[0]), int(input_size[1])),
        preprocessing=Preprocessing(mean=pre.numbers("mean", 3, float), std=std),
        layers=dict(layers),
        default_layer=default_layer,
        licence=reader.text("licence"),
        source=reader.text("source"),
        architecture=architecture,
        num_classes=num_classes,
        classes=tuple(classes),
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
