"""The HPA-Cell-Segmentation network: a U-Net on a DPN-92 encoder, named so its released weights load.

The released files (``dpn_unet_nuclei_v1.pth``, ``dpn_unet_cell_3ch_v1.pth``) are
whole pickled modules of the authors' U-Net, an encoder-decoder whose encoder
stages are the blocks of a DPN-92 (Chen et al., "Dual Path Networks", NeurIPS
2017, in the layout of the public ``pretrainedmodels`` DPN) regrouped by
resolution. Their parameter names follow from that module tree::

    encoder_stages.0.{0,1}              stem: 7×7/2 conv, batch norm (then ReLU)
    encoder_stages.1.{1..3}             3×3/2 max pool (index 0), conv2_1..conv2_3
    encoder_stages.2.{0..3}             conv3_1..conv3_4
    encoder_stages.3.{0..19}            conv4_1..conv4_20
    encoder_stages.4.{0..3}             conv5_1..conv5_3, conv5_bn_ac
      <block>.c1x1_w_s1|c1x1_w_s2.{bn,conv}   projection of a stage's first block
      <block>.c1x1_a|c3x3_b|c1x1_c.{bn,conv}  the 1×1, grouped 3×3, 1×1 path
    decoder_stages.{0..3}.layer.1       ×2 nearest upsampling, 3×3 conv (+ ReLU)
    bottlenecks.{0..3}.seq.0            skip concatenation, 3×3 conv (+ ReLU)
    last_upsample.layer.1               the last ×2 upsampling to full resolution
    final.0                             1×1 conv 64 → 3 classes

which :class:`HpaDpnUnet` reproduces (its ``state_dict`` has exactly those keys,
139.1 M parameters). Outputs are logits of background, border and interior.

Importing this module registers the architectures ``hpa-dpn92-unet-nuclei`` and
``hpa-dpn92-unet-cell`` with :mod:`labsight.models`. No weights are built in:
the models exist when an operator supplies them (see ``MODEL_CARD_HPA.md``).
"""

from __future__ import annotations

import torch
from torch import nn

from labsight.models import ModelManifest, register_architecture

ENCODER_WIDTHS = (64, 336, 704, 1552, 2688)
"""Channels of the five encoder stages (strides 2, 4, 8, 16, 32)."""

DECODER_WIDTHS = (64, 336, 704, 1552)
"""Channels of the decoder at strides 2, 4, 8 and 16 (the encoder's, as the authors kept them)."""

LAST_UPSAMPLE_WIDTH = 64
"""Channels of the full-resolution block before the classifier."""

ARCHITECTURES = {"nuclei": "hpa-dpn92-unet-nuclei", "cell": "hpa-dpn92-unet-cell"}
"""Architectures of the two released models: nuclei on [blue, blue, blue], cells on [red, yellow, blue]."""

MODEL_NAMES = {"nuclei": "hpa-nuclei", "cell": "hpa-cell"}
"""Names the converter gives the two models in the segmentation repository."""

CLASSES = ("background", "border", "interior")
"""The network's output channels, in order."""

MEAN = (124 / 255, 117 / 255, 104 / 255)
"""Per-channel mean of the input pixels scaled to [0, 1], subtracted before the network."""

STD = (1 / (0.0167 * 255),) * 3
"""Per-channel standard deviation (0.2348) the centred pixels are divided by."""

BN_EPS = 1e-3
"""Batch-norm epsilon of the DPN layers (the decoder has no batch norm)."""

# DPN-92 (Chen et al. 2017, table 1): 64 stem channels, k_R 96, 32 groups,
# blocks (3, 4, 20, 3) per stage, dense increments (16, 32, 24, 128).
_STEM = 64
_K_R = 96
_GROUPS = 32
_BLOCKS = (3, 4, 20, 3)
_INCREMENTS = (16, 32, 24, 128)


class BnActConv2d(nn.Module):
    """Pre-activation convolution: batch norm, ReLU, convolution without bias."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2,
                              groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv(relu(bn(x)))."""
        return self.conv(self.act(self.bn(x)))


class CatBnAct(nn.Module):
    """Batch norm and ReLU of the concatenated paths that end the encoder (``conv5_bn_ac``)."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn(x))."""
        return self.act(self.bn(x))


class DualPathBlock(nn.Module):
    """One DPN block: a ResNeXt bottleneck whose output feeds a residual and a dense path.

    Parameters
    ----------
    in_chs : int
        Channels of the concatenated input paths.
    width_a : int
        Channels of the 1×1 reduction and of the grouped 3×3 convolution.
    residual : int
        Channels of the residual path.
    increment : int
        Channels the block appends to the dense path.
    projection_stride : int
        0 for a block that adds to its input's paths; 1 or 2 for the first block
        of a stage, which projects its input onto new paths (with that stride).
    """

    def __init__(self, in_chs: int, width_a: int, residual: int, increment: int,
                 projection_stride: int) -> None:
        super().__init__()
        self.residual = residual
        self.stride = max(projection_stride, 1)
        self.projection: str | None = None
        if projection_stride:
            # The weights name the projection after its stride.
            self.projection = f"c1x1_w_s{projection_stride}"
            self.add_module(self.projection, BnActConv2d(
                in_chs, residual + 2 * increment, 1, stride=projection_stride))
        self.c1x1_a = BnActConv2d(in_chs, width_a, 1)
        self.c3x3_b = BnActConv2d(width_a, width_a, 3, stride=self.stride, groups=_GROUPS)
        self.c1x1_c = BnActConv2d(width_a, residual + increment, 1)

    def forward(self, paths: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The (residual, dense) paths after this block, from the previous block's paths."""
        x = _joined(paths)
        if self.projection is None:
            residual, dense = paths
        else:
            projected = self.get_submodule(self.projection)(x)
            residual, dense = projected[:, :self.residual], projected[:, self.residual:]
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x)))
        return residual + out[:, :self.residual], torch.cat([dense, out[:, self.residual:]], dim=1)


class EncoderStage(nn.Sequential):
    """Modules of one encoder stage run in order, DPN blocks on (residual, dense) paths.

    The output is the paths concatenated: the skip connection and the next stage's input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output (N, C, H', W') for its input."""
        paths: tuple[torch.Tensor, ...] = (x,)
        for module in self:
            paths = module(paths) if isinstance(module, DualPathBlock) else (module(_joined(paths)),)
        return _joined(paths)


class UnetDecoderBlock(nn.Module):
    """×2 nearest upsampling, 3×3 convolution, ReLU."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_chs, out_chs, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The upsampled features."""
        return self.layer(x)


class ConvBottleneck(nn.Module):
    """Concatenation of decoder and skip features, 3×3 convolution, ReLU."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, decoded: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The merged features."""
        return self.seq(torch.cat([decoded, skip], dim=1))


class HpaDpnUnet(nn.Module):
    """The HPA-Cell-Segmentation U-Net: DPN-92 encoder, nearest-upsampling decoder, 3 classes.

    Maps (N, 3, H, W) float32 images, H and W multiples of 32, normalised as
    ``services.segmentation.hpa`` does, to (N, 3, H, W) logits of
    :data:`CLASSES`. The nuclei and the cell models share this architecture.

    Examples
    --------
    >>> model = HpaDpnUnet().eval()
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder_stages = nn.ModuleList(_dpn92_stages())
        self.decoder_stages = nn.ModuleList(
            UnetDecoderBlock(
                ENCODER_WIDTHS[-1] if level == len(DECODER_WIDTHS) - 1 else DECODER_WIDTHS[level + 1],
                DECODER_WIDTHS[level],
            )
            for level in range(len(DECODER_WIDTHS))
        )
        # Deepest first: the decoder at stride 16 merges with the encoder's stride-16 skip.
        self.bottlenecks = nn.ModuleList(
            ConvBottleneck(ENCODER_WIDTHS[level] + DECODER_WIDTHS[level], DECODER_WIDTHS[level])
            for level in reversed(range(len(DECODER_WIDTHS)))
        )
        self.last_upsample = UnetDecoderBlock(DECODER_WIDTHS[0], LAST_UPSAMPLE_WIDTH)
        self.final = nn.Sequential(nn.Conv2d(LAST_UPSAMPLE_WIDTH, len(CLASSES), 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 3, H, W) of background, border and interior."""
        skips = []
        x = images
        for stage in self.encoder_stages:
            x = stage(x)
            skips.append(x)
        for depth, bottleneck in enumerate(self.bottlenecks):
            level = len(DECODER_WIDTHS) - 1 - depth
            x = bottleneck(self.decoder_stages[level](x), skips[level])
        return self.final(self.last_upsample(x))


def _joined(paths: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The paths concatenated along channels (a single path as it is)."""
    return paths[0] if len(paths) == 1 else torch.cat(paths, dim=1)


def _dpn92_stages() -> list[nn.Module]:
    """The five encoder stages: stem, then DPN-92's conv2..conv5 (the pool opens conv2)."""
    stem = EncoderStage(
        nn.Conv2d(3, _STEM, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(_STEM, eps=BN_EPS),
        nn.ReLU(inplace=True),
    )
    stages: list[nn.Module] = [stem]
    in_chs = _STEM
    for index, (blocks, increment) in enumerate(zip(_BLOCKS, _INCREMENTS, strict=True)):
        residual = 256 * 2 ** index
        width_a = _K_R * residual // 256
        modules: list[nn.Module] = [nn.MaxPool2d(3, stride=2, padding=1)] if index == 0 else []
        for block in range(blocks):
            stride = (1 if index == 0 else 2) if block == 0 else 0
            modules.append(DualPathBlock(in_chs, width_a, residual, increment, stride))
            in_chs = residual + (block + 3) * increment
        if index == len(_BLOCKS) - 1:
            modules.append(CatBnAct(in_chs))
        stages.append(EncoderStage(*modules))
    return stages


def build_for_manifest(manifest: ModelManifest) -> HpaDpnUnet:
    """The untrained network of an HPA manifest (both architectures are the same network).

    Raises
    ------
    ValueError
        If the manifest gives the network other than 3 input channels.
    """
    if manifest.input_channels != 3:
        raise ValueError(
            f"input_channels: the HPA networks take 3 channels, manifest {manifest.origin or manifest.name} "
            f"says {manifest.input_channels}"
        )
    return HpaDpnUnet()


def register() -> None:
    """Register the HPA architectures with the shared model stack (idempotent)."""
    for name in ARCHITECTURES.values():
        register_architecture(name, build_for_manifest)


register()
