"""The registry of network architectures that ``state_dict`` manifests name.

A model service registers a builder for each architecture it implements, once,
when its architectures module is imported; the shared loader builds the
network by the name in the manifest and loads the weights into it. Names are
global to the process, so two services cannot claim the same one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from labsight.models.manifest import ModelManifest

ArchitectureBuilder = Callable[["ModelManifest"], "nn.Module"]
"""Builds an untrained network for a manifest (its ``num_classes``, ``input_channels``, ``outputs``)."""

_lock = threading.Lock()
_builders: dict[str, ArchitectureBuilder] = {}


def register_architecture(name: str, builder: ArchitectureBuilder) -> None:
    """Make ``name`` loadable: ``builder(manifest)`` returns the untrained network.

    Registering the same builder again is a no-op (a module imported twice).

    Raises
    ------
    ValueError
        If ``name`` is empty or already registered with another builder.
    """
    if not name:
        raise ValueError("architecture: the name must not be empty")
    with _lock:
        known = _builders.get(name)
        if known is not None and known is not builder:
            raise ValueError(f"architecture: {name!r} is registered already (by {known.__module__})")
        _builders[name] = builder


def architecture_names() -> list[str]:
    """The registered architecture names, sorted."""
    with _lock:
        return sorted(_builders)


def build_architecture(manifest: ModelManifest) -> nn.Module:
    """The untrained network of the manifest's architecture.

    Raises
    ------
    ValueError
        If the architecture is not registered, naming the registered ones.
    """
    with _lock:
        builder = _builders.get(manifest.architecture)
    if builder is None:
        raise ValueError(
            f"architecture: unknown {manifest.architecture!r}; known: {architecture_names()}"
        )
    return builder(manifest)
