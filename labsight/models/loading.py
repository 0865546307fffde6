"""Loading a manifest's weights into an evaluation-mode torch module, and nothing from the network."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from labsight.errors import FailedPrecondition
from labsight.models.architectures import build_architecture
from labsight.models.manifest import ModelManifest

if TYPE_CHECKING:
    from torch import nn


def check_weights(manifest: ModelManifest) -> None:
    """Raise FailedPrecondition naming the weight file if it is missing."""
    if not manifest.weights.is_file():
        raise FailedPrecondition(
            f"model {manifest.name!r}: weights file not found: {manifest.weights} "
            f"(manifest {manifest.origin})"
        )


def load_torch_model(manifest: ModelManifest) -> nn.Module:
    """The model of a ``torchscript`` or ``state_dict`` manifest, on the CPU, in eval mode.

    Raises
    ------
    FailedPrecondition
        If the weight file is missing, the architecture is not registered (or refuses
        the manifest) or the weights do not fit it.
    ValueError
        For an ``onnx`` manifest, which has no torch module.
    """
    import torch

    check_weights(manifest)
    if manifest.format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript files still load fine
            module: nn.Module = torch.jit.load(str(manifest.weights), map_location="cpu")
    elif manifest.format == "state_dict":
        try:
            module = build_architecture(manifest)
        except ValueError as error:
            raise FailedPrecondition(
                f"model {manifest.name!r} (manifest {manifest.origin}): {error}"
            ) from None
        state = torch.load(manifest.weights, map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            raise FailedPrecondition(
                f"model {manifest.name!r}: weights {manifest.weights} do not fit architecture "
                f"{manifest.architecture!r} with {manifest.num_classes} classes: {error}"
            ) from None
    else:
        raise ValueError(f"model {manifest.name!r} is stored as {manifest.format}, not as torch weights")
    return module.eval()
