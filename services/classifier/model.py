"""The organelle classifier network: a small multi-label CNN over 4-channel RGBY cell crops.

Registered with the shared model stack as architecture ``hpa-cell-cnn`` on import.
"""

from __future__ import annotations

import torch
from torch import nn

from labsight.models import ModelManifest, register_architecture

ARCHITECTURE = "hpa-cell-cnn"

DEFAULT_WIDTHS = (24, 32, 64, 128)
"""Channels of the four stages."""


def _block(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


class CellClassifier(nn.Module):
    """Stages of 3×3 convolutions with batch norm, each but the last ending in a 2×2 max pool,
    then average and max pooling joined into a linear layer with one sigmoid output per class.

    Parameters
    ----------
    in_channels : int
        Channels of the crops (4: red, green, blue, yellow).
    num_classes : int
        Independent (multi-label) outputs.
    widths : tuple of int
        Channels of each stage. The first stage is one convolution at full
        resolution (kept cheap), the middle ones two, the last one.

    Notes
    -----
    The input goes through a batch norm first, so crops need only be scaled
    to [0, 1]; ``forward`` returns probabilities, :meth:`logits` the scores
    before the sigmoid (for training with ``BCEWithLogitsLoss``).
    The last stage (``features``) is where class activation maps are read.
    """

    def __init__(
        self, in_channels: int = 4, num_classes: int = 19, widths: tuple[int, ...] = DEFAULT_WIDTHS
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(in_channels)]
        previous = in_channels
        last = len(widths) - 1
        for stage, width in enumerate(widths):
            layers += _block(previous, width)
            if 0 < stage < last:
                layers += _block(width, width)
            if stage < last:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * previous, num_classes)

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        """Class scores (N, num_classes) before the sigmoid."""
        maps = self.features(crops)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(pooled))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes), each in [0, 1] on its own."""
        return torch.sigmoid(self.logits(crops))


def cell_classifier(manifest: ModelManifest) -> nn.Module:
    """The ``hpa-cell-cnn`` architecture for a manifest (its input channels and classes)."""
    return CellClassifier(manifest.input_channels, manifest.num_classes)


register_architecture(ARCHITECTURE, cell_classifier)
