"""The Cellpose-style flow network (residual U-Net with style vectors) in plain torch.

The layer names follow the state dicts that the ``scellseg`` package ships
(``assets/pretrained_models/cellpose`` and ``.../scellseg``), so those files load with
``load_state_dict(strict=True)``. Input: (N, 2, H, W) float, channel 0 the cytoplasm (or the
only) channel and channel 1 the nucleus channel (zeros when there is none), each scaled so its
1st percentile is 0 and its 99th is 1. Output: (N, 3, H, W), the flows dY, dX (×5 the unit
vectors of the diffusion gradient the net was trained on) and the cell probability logit.
H and W must be multiples of 8 (three 2× poolings).

Two variants share the code: ``cellpose`` (the original Cellpose network: one style vector from
the deepest level feeds every decoder block) and ``scellseg`` (attention gates on the skip
connections, a dense 1×1 fusion after each decoder block, and styles from every encoder level
concatenated from deep to shallow).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_WIDTHS: tuple[int, ...] = (2, 32, 64, 128, 256)
"""Channels of the input and of the four encoder levels."""


def _bn_relu_conv(channels_in: int, channels_out: int, size: int) -> nn.Sequential:
    """Pre-activation convolution: batch norm, ReLU, ``size``×``size`` convolution (same padding)."""
    return nn.Sequential(
        nn.BatchNorm2d(channels_in, eps=1e-5),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_in, channels_out, size, padding=size // 2),
    )


def _bn_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    """Batch norm then a 1×1 convolution: the projection of a residual shortcut."""
    return nn.Sequential(nn.BatchNorm2d(channels_in, eps=1e-5), nn.Conv2d(channels_in, channels_out, 1))


def _conv_bn_relu(channels_in: int, channels_out: int) -> nn.Sequential:
    """A 1×1 convolution, batch norm and ReLU (the scellseg fusion layers)."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 1),
        nn.BatchNorm2d(channels_out, eps=1e-5),
        nn.ReLU(inplace=True),
    )


def _conv_bn(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 1), nn.BatchNorm2d(channels_out, eps=1e-5))


class _EncoderBlock(nn.Module):
    """Two residual units of two pre-activation 3×3 convolutions; the first one projects."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.proj = _bn_conv(channels_in, channels_out)
        self.conv = nn.Sequential()
        for index in range(4):
            self.conv.add_module(f"conv_{index}", _bn_relu_conv(channels_in if index == 0 else channels_out,
                                                                 channels_out, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.conv[1](self.conv[0](x))
        return x + self.conv[3](self.conv[2](x))


class _StyledConv(nn.Module):
    """Adds a linear map of the style vector to every pixel, then a pre-activation 3×3 convolution."""

    def __init__(self, channels: int, style_channels: int) -> None:
        super().__init__()
        self.full = nn.Linear(style_channels, channels)
        self.conv = _bn_relu_conv(channels, channels, 3)

    def forward(self, style: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x + self.full(style)[:, :, None, None])


class _DecoderBlock(nn.Module):
    """A residual decoder block: the skip tensor and the style enter; optional dense fusion."""

    def __init__(self, channels_in: int, channels_out: int, style_channels: int, dense: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.conv.add_module("conv_0", _bn_relu_conv(channels_in, channels_out, 3))
        for index in (1, 2, 3):
            self.conv.add_module(f"conv_{index}", _StyledConv(channels_out, style_channels))
        self.proj = _bn_conv(channels_in, channels_out)
        if dense:
            self.up_conv = _conv_bn_relu(channels_in + channels_out, channels_out)
        self.dense = dense

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, style: torch.Tensor) -> torch.Tensor:
        first = self.conv[0](x)
        if skip is not None:
            first = first + skip
        out = self.proj(x) + self.conv[1](style, first)
        out = out + self.conv[3](style, self.conv[2](style, out))
        if self.dense:
            out = self.up_conv(torch.cat([x, out], dim=1))
        return out


class _AttentionGate(nn.Module):
    """Additive attention gate: weights the skip tensor by a sigmoid map of skip and decoder features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = channels // 2
        self.W_g = _conv_bn(channels, inner)
        self.W_x = _conv_bn(channels, inner)
        self.psi = nn.Sequential(nn.Conv2d(inner, 1, 1), nn.BatchNorm2d(1, eps=1e-5), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.W_g(gate) + self.W_x(skip)))


class _Downsample(nn.Module):
    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.down = nn.Sequential()
        for level in range(len(widths) - 1):
            self.down.add_module(f"res_down_{level}", _EncoderBlock(widths[level], widths[level + 1]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        for level, block in enumerate(self.down):
            levels.append(block(x if level == 0 else F.max_pool2d(levels[-1], 2)))
        return levels


class _Upsample(nn.Module):
    def __init__(self, widths: Sequence[int], style_channels: Sequence[int], attention: bool) -> None:
        super().__init__()
        # decoder widths: the encoder's, with the deepest level repeated
        up = [*widths[1:], widths[-1]]
        self.up = nn.Sequential()
        if attention:
            self.up_conv = nn.Sequential()
            self.attn = nn.Sequential()
        # with attention a block's input is [gated skip, upsampled features], up[level] each,
        # which is as wide as the plain block's input up[level + 1] for these widths
        for level in range(len(up) - 2):
            self.up.add_module(f"res_up_{level}",
                               _DecoderBlock(up[level + 1], up[level], style_channels[level], attention))
            if attention:
                self.up_conv.add_module(f"up_conv_{level}", _conv_bn_relu(up[level + 1], up[level]))
                self.attn.add_module(f"attn_{level}", _AttentionGate(up[level]))
        deepest = len(up) - 2
        self.up.add_module(f"res_up_{deepest}",
                           _DecoderBlock(up[deepest + 1], up[deepest], style_channels[-1], attention))
        self.attention = attention

    def forward(self, styles: Sequence[torch.Tensor], levels: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.up[-1](levels[-1], levels[-1], styles[-1])
        for level in range(len(self.up) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if self.attention:
                x = self.up_conv[level](x)
                x = torch.cat((self.attn[level](x, levels[level]), x), dim=1)
                x = self.up[level](x, None, styles[level])
            else:
                x = self.up[level](x, levels[level], styles[level])
        return x


def _style(x: torch.Tensor) -> torch.Tensor:
    """The unit-length mean of a feature map over its pixels: (N, C)."""
    pooled = x.mean(dim=(-2, -1))
    return pooled / torch.sum(pooled**2, dim=1, keepdim=True) ** 0.5


class _Extractor(nn.Module):
    def __init__(self, widths: Sequence[int], hierarchical_style: bool, attention: bool) -> None:
        super().__init__()
        self.downsample = _Downsample(widths)
        deepest = widths[-1]
        if hierarchical_style:
            style_channels = [sum(widths[level + 1:]) for level in range(len(widths) - 1)]
        else:
            style_channels = [deepest] * (len(widths) - 1)
        self.upsample = _Upsample(widths, style_channels, attention)
        self.hierarchical_style = hierarchical_style

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = self.downsample(x)
        deepest_style = _style(levels[-1])
        if self.hierarchical_style:
            # level k sees the styles of levels deepest..k concatenated, deepest first
            styles = [deepest_style]
            for level in range(len(levels) - 2, -1, -1):
                styles.insert(0, torch.cat((styles[0], _style(levels[level])), dim=1))
        else:
            styles = [deepest_style] * len(levels)
        return self.upsample(styles, levels), deepest_style


class _Head(nn.Module):
    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.base_bn = nn.BatchNorm2d(channels, eps=1e-5)
        self.base_conv = nn.Conv2d(channels, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_conv(F.relu(self.base_bn(x)))


class FlowNet(nn.Module):
    """Cellpose-style network: (N, 2, H, W) normalised image → (N, 3, H, W) [dY, dX, cell logit].

    Parameters
    ----------
    variant : {"cellpose", "scellseg"}
        Which of the two layouts of the ``scellseg`` package's weight files to build.

    Notes
    -----
    Stringer, Wang, Michaelos & Pachitariu, "Cellpose: a generalist algorithm for cellular
    segmentation", Nature Methods 18 (2021); Scellseg: Xun et al., "Scellseg: a style-aware
    deep learning tool for adaptive cell instance segmentation by contrastive fine-tuning",
    iScience (2022).
    """

    def __init__(self, variant: str = "cellpose") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: unknown {variant!r}; known: {sorted(VARIANTS)}")
        scellseg = variant == "scellseg"
        self.extractor = _Extractor(ENCODER_WIDTHS, hierarchical_style=scellseg, attention=scellseg)
        self.tasker = _Head(ENCODER_WIDTHS[1], 3)
        self.variant = variant

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Flows and cell-probability logits of a batch of normalised 2-channel images."""
        features, _ = self.extractor(images)
        return self.tasker(features)


VARIANTS: tuple[str, ...] = ("cellpose", "scellseg")
"""The layouts :class:`FlowNet` builds, named like the weight files of the ``scellseg`` package."""

DIAMETER_PX: float = 30.0
"""Mean object diameter (equivalent-circle, pixels) the networks were trained at."""
