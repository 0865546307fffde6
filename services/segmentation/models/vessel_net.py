"""The LabPics vessel-content network, named so the seed's released state dict loads.

The seed (Eppel et al., "Computer vision for liquid samples in hospitals and
medical labs using hierarchical image segmentation") segments what is inside
one vessel of a photo, given the vessel's mask: 10 instance maps and one map
per material/part class. Its network, rebuilt here in plain torch::

    Encoder.*            ResNeXt-50 32×4d in torchvision's layout (conv1, bn1,
                         layer1..layer4 of Bottlenecks, fc kept in the file)
    ROIEncoder           Conv2d(1, 64, 3, stride 2, padding 1), weight 0 and bias 1
                         at initialisation: the vessel mask, multiplied into
                         bn1(conv1(image)) before the first ReLU
    PSPLayers.{0..3}.0, PSPSqueeze.{0,1}
                         a pyramid-pooling branch the seed defines but never runs
                         (its weights are in the file, so they are here)
    ASPPLayers.{0..3}.{0,1}
                         3×3 convolutions 2048→512 at dilations 1, 4, 12, 24, BN, ReLU
    SqueezeLayers.{0,1}  1×1 2048→512 over the concatenated ASPP branches, BN, ReLU
    SkipConnections.{0,1,2}.{0,1}
                         1×1 convolutions of layer3, layer2, layer1 (1024→512,
                         512→256, 256→128), BN, ReLU
    SqueezeUpsample.{0,1,2}.{0,1}
                         3×3 convolutions after each skip concatenation (1024→512,
                         768→256, 384→256), BN, ReLU; the decoder ends at stride 4
    InstanceOutLayers.{0..9}
                         10 instance heads, 3×3 256→2
    OutLayersList.{0..28}
                         one head per class of :data:`CLASSES`, in that order, 3×3 256→2

Each head's two logits are upsampled (bilinearly) to the input size and
softmaxed; the second channel is the probability of "inside". The key names
are a reconstruction from the seed's public code and description, not from its
file (which cannot be downloaded here); ``MODEL_CARD_VESSEL.md`` says how to
supply the weights.

Importing this module registers the architecture ``labpics-vessel-content``
with :mod:`labsight.models`. No weights are built in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labsight.models import ArchitectureBuilder, ModelManifest, register_architecture
from labsight.vessel_fill import fill_levels
from services.segmentation.vessels import VesselContent, check_vessel_inputs

ARCHITECTURE = "labpics-vessel-content"
"""Name of the architecture in the shared model stack (the seed's network)."""

ARCHITECTURES = {1.0: ARCHITECTURE, 0.5: f"{ARCHITECTURE}-w050", 0.25: f"{ARCHITECTURE}-w025"}
"""Registered architectures by width factor: the seed's, and narrower ones ``train-vessel`` can
train quickly (their state dicts have the seed's key names with fewer channels)."""

CLASSES = (
    "Thermometer", "Solid", "PipeTubeStraw", "VesselInsideVessel", "Valve", "SemiTrans",
    "Powder", "Granular", "Foam", "Gel", "PropertiesMaterialInsideImmersed", "Filled", "Spike",
    "Suspension", "Spatula", "Cork", "Opaque", "Liquid", "Filter", "MaterialScattered",
    "Transparent", "MagneticStirer", "Blood", "Urine", "Label", "Part", "Holder", "Vapor",
    "MaterialOnSurface",
)
"""The seed's material/part classes, in the order of its semantic heads (its file needs this order)."""

INSTANCE_HEADS = 10
"""Instance maps the network predicts (the most instances one vessel can hold)."""

INPUT_CHANNELS = 4
"""Network input: three normalised BGR channels and the vessel mask (0/1)."""

OUTPUTS = ("semantic", "instances")
"""Outputs of ``forward``: (N, 29, H, W) class and (N, 10, H, W) instance probabilities."""

BGR_MEAN = (123.68, 116.779, 103.939)
"""Subtracted from the B, G and R channels in this order, as the seed does (0..255 pixels)."""

PIXEL_SCALE = 65.0
"""The centred BGR pixels are divided by this."""

STRIDE = 32
"""Total stride of the encoder: inputs are padded to a multiple of it and cropped back."""

MAX_SIDE = 1000
"""The seed shrinks photos whose longest side is larger than this before the network."""

MIN_SIDE = 200
"""... and enlarges photos whose shortest side is smaller than this."""

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""A loaded network: (1, 4, h, w) float32 input → (semantic, instances) probabilities."""

ASPP_DILATIONS = (1, 4, 12, 24)
PSP_SCALES = 4

_LAYERS = (3, 4, 6, 3)
_PLANES = (64, 128, 256, 512)
_GROUPS = 32
_BASE_WIDTH = 4


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1×1, grouped 3×3 (with the stride), 1×1, each with BN; residual add."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int) -> None:
        super().__init__()
        width = planes * _BASE_WIDTH // 64 * _GROUPS
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=_GROUPS, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(x' + bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))), x' the projected input."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNeXtEncoder(nn.Module):
    """ResNeXt-50 32×4d with torchvision's parameter names (``fc`` is kept, never run).

    Parameters
    ----------
    widths : _Widths
        Channel counts (the real network's, or narrower ones for tests).
    """

    def __init__(self, widths: _Widths) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_chs = widths.stem
        for index, (blocks, planes) in enumerate(zip(_LAYERS, widths.planes, strict=True)):
            layer = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layer.append(Bottleneck(in_chs, planes, stride))
                in_chs = planes * Bottleneck.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(in_chs, 1000)


@dataclass(frozen=True)
class _Widths:
    """Channel counts of the network, all scaled by one factor (1 = the seed's)."""

    factor: float

    def __call__(self, channels: int) -> int:
        return int(channels * self.factor)

    @property
    def stem(self) -> int:
        return self(64)

    @property
    def planes(self) -> tuple[int, ...]:
        return tuple(self(planes) for planes in _PLANES)

    @property
    def skips(self) -> tuple[int, int, int]:
        """Channels of layer3, layer2, layer1 (the skips, deepest first) and of layer4."""
        return self(1024), self(512), self(256)


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class VesselContentNet(nn.Module):
    """The seed's vessel-content network (149.7 M parameters at ``width_factor`` 1).

    Maps (N, 4, H, W) float32 — BGR normalised by :func:`network_input`, then the
    vessel mask — to the class probabilities (N, 29, H, W) of :data:`CLASSES`
    and the instance probabilities (N, 10, H, W). Any H and W run (the decoder
    resizes to each skip's size); :func:`predict` pads to :data:`STRIDE` as the
    seed's training sizes were. Built in evaluation mode; a trainer calls
    ``train()`` itself.

    Parameters
    ----------
    width_factor : float
        Scales every channel count; 1 for the real network (the only value
        whose weights the seed released), 1/2 or 1/4 for quick training tests
        (the 32 groups of the grouped convolutions need ``64 × width_factor``
        divisible by 16).

    Examples
    --------
    >>> net = VesselContentNet(width_factor=0.25)
    >>> semantic, instances = net(torch.zeros(1, 4, 64, 96))
    >>> semantic.shape, instances.shape
    (torch.Size([1, 29, 64, 96]), torch.Size([1, 10, 64, 96]))
    """

    def __init__(self, width_factor: float = 1.0) -> None:
        super().__init__()
        w = _Widths(width_factor)
        deep = w(2048)
        skip3, skip2, skip1 = w.skips
        self.Encoder = ResNeXtEncoder(w)
        self.ROIEncoder = nn.Conv2d(1, w.stem, 3, stride=2, padding=1, bias=True)
        with torch.no_grad():
            self.ROIEncoder.weight.zero_()
            self.ROIEncoder.bias.fill_(1.0)
        self.PSPLayers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(deep, w(1024), 3, padding=1, bias=True)) for _ in range(PSP_SCALES)
        )
        self.PSPSqueeze = _conv_bn_relu(w(1024) * PSP_SCALES, w(512), 1)
        self.ASPPLayers = nn.ModuleList(_conv_bn_relu(deep, w(512), 3, d) for d in ASPP_DILATIONS)
        self.SqueezeLayers = _conv_bn_relu(w(512) * len(ASPP_DILATIONS), w(512), 1)
        self.SkipConnections = nn.ModuleList(
            [_conv_bn_relu(skip3, w(512), 1), _conv_bn_relu(skip2, w(256), 1),
             _conv_bn_relu(skip1, w(128), 1)]
        )
        self.SqueezeUpsample = nn.ModuleList(
            [_conv_bn_relu(w(512) + w(512), w(512), 3), _conv_bn_relu(w(256) + w(512), w(256), 3),
             _conv_bn_relu(w(128) + w(256), w(256), 3)]
        )
        self.InstanceOutLayers = nn.ModuleList(
            nn.Conv2d(w(256), 2, 3, padding=1, bias=False) for _ in range(INSTANCE_HEADS)
        )
        self.OutLayersList = nn.ModuleList(
            nn.Conv2d(w(256), 2, 3, padding=1, bias=False) for _ in CLASSES
        )
        self.eval()

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Decoder features (N, 256, H/4, W/4) of normalised BGR + mask inputs (N, 4, H, W)."""
        encoder = self.Encoder
        image, mask = inputs[:, :3], inputs[:, 3:4]
        x = encoder.bn1(encoder.conv1(image)) * self.ROIEncoder(mask)
        x = encoder.maxpool(encoder.relu(x))
        skips = []
        for layer in (encoder.layer1, encoder.layer2, encoder.layer3):
            x = layer(x)
            skips.append(x)
        x = encoder.layer4(x)
        x = self.SqueezeLayers(torch.cat([branch(x) for branch in self.ASPPLayers], dim=1))
        for skip_layer, squeeze, skip in zip(self.SkipConnections, self.SqueezeUpsample,
                                             reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = squeeze(torch.cat([skip_layer(skip), x], dim=1))
        return x

    def head_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, 29, 2, H, W) of the class heads and (N, 10, 2, H, W) of the instance heads."""
        x = self.features(inputs)
        size = inputs.shape[2:]

        def run(heads: nn.ModuleList) -> torch.Tensor:
            logits = torch.cat([head(x) for head in heads], dim=1)
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            return logits.reshape(logits.shape[0], len(heads), 2, *logits.shape[2:])

        return run(self.OutLayersList), run(self.InstanceOutLayers)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities of each class (N, 29, H, W) and of each instance (N, 10, H, W)."""
        semantic, instances = self.head_logits(inputs)
        return torch.softmax(semantic, dim=2)[:, :, 1], torch.softmax(instances, dim=2)[:, :, 1]


def network_input(photo: np.ndarray, vessel_mask: np.ndarray) -> np.ndarray:
    """The seed's input (1, 4, H, W) float32: BGR minus :data:`BGR_MEAN`, over 65; the mask 0/1.

    Parameters
    ----------
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB photo.
    vessel_mask : numpy.ndarray
        (H, W) mask, non-zero inside the vessel.
    """
    bgr = photo[..., ::-1].astype(np.float32)
    planes = (bgr - np.asarray(BGR_MEAN, np.float32)) / PIXEL_SCALE
    mask = (vessel_mask > 0).astype(np.float32)[..., None]
    return np.ascontiguousarray(np.concatenate([planes, mask], axis=2).transpose(2, 0, 1)[None])


def working_size(height: int, width: int) -> tuple[int, int]:
    """The size the seed runs a photo at: longest side ≤ 1000, then shortest side ≥ 200."""
    scale = min(1.0, MAX_SIDE / max(height, width))
    scale = max(scale, MIN_SIDE / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def predict(run: Runner, photo: np.ndarray, vessel_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and instance probabilities of one photo at its own size, as the seed infers.

    The photo is resized (nearest) to :func:`working_size`, padded by reflection
    to a multiple of :data:`STRIDE`, run, cropped and resized back.

    Parameters
    ----------
    run : Runner
        (1, 4, h, w) float32 batch → (semantic, instances) arrays (1, 29, h, w) and
        (1, 10, h, w); e.g. a :class:`VesselContentNet` through :func:`torch_runner`
        or a model of a :class:`~labsight.models.ModelServer`.
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB photo.
    vessel_mask : numpy.ndarray
        (H, W) vessel mask, non-zero inside.

    Returns
    -------
    semantic, instances : numpy.ndarray
        (29, H, W) and (10, H, W) float32 probabilities.
    """
    height, width = vessel_mask.shape
    size = working_size(height, width)
    if size != (height, width):
        photo = cv2.resize(photo, size[::-1], interpolation=cv2.INTER_NEAREST)
        vessel_mask = cv2.resize((vessel_mask > 0).astype(np.uint8), size[::-1],
                                 interpolation=cv2.INTER_NEAREST)
    batch = network_input(photo, vessel_mask)
    pad_h, pad_w = (-size[0]) % STRIDE, (-size[1]) % STRIDE
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    semantic, instances = run(batch)
    maps = np.concatenate([semantic[0], instances[0]], axis=0)[:, :size[0], :size[1]]
    if size != (height, width):
        maps = np.stack([cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST)
                         for plane in maps])
    maps = maps.astype(np.float32, copy=False)
    return maps[:len(CLASSES)], maps[len(CLASSES):]


MIN_INSTANCE_PIXELS = 250
"""The seed keeps instances larger than this (pixels at its working size)."""

CLASS_COVER = 0.3
"""An instance has the classes whose semantic map covers more than this share of it."""


def network_content(photo: np.ndarray, vessel_mask: np.ndarray, run: Runner, model: str) -> VesselContent:
    """What a vessel holds according to the network: the seed's post-processing of :func:`predict`.

    Each vessel pixel goes to the instance head of highest probability if it
    is above 0.5; instances of more than :data:`MIN_INSTANCE_PIXELS` (at the
    working size) are kept, bottom first; an instance's classes are the class
    maps (probability > 0.5) covering more than :data:`CLASS_COVER` of it, with
    their mean probability over it. Semantic masks of the classes present.

    Raises
    ------
    ValueError
        For inputs :func:`services.segmentation.vessels.check_vessel_inputs` refuses.
    """
    inside = check_vessel_inputs(photo, vessel_mask)
    semantic, instances = predict(run, photo, inside.astype(np.uint8))
    height, width = inside.shape
    work_h, work_w = working_size(height, width)
    min_pixels = MIN_INSTANCE_PIXELS * (height * width) / (work_h * work_w)
    best = instances.argmax(axis=0)
    assigned = (instances.max(axis=0) > 0.5) & inside
    masks = [(best == k) & assigned for k in range(len(instances))]
    masks = [m for m in masks if m.sum() > min_pixels]
    masks.sort(key=lambda m: -np.nonzero(m)[0].mean())  # bottom first
    present = semantic > 0.5
    classes, probabilities = [], []
    for mask in masks:
        area = mask.sum()
        cover = (present & mask).reshape(len(CLASSES), -1).sum(axis=1) / area
        picked = [c for c in range(len(CLASSES)) if cover[c] > CLASS_COVER]
        classes.append(tuple(CLASSES[c] for c in picked))
        probabilities.append(tuple(round(float(semantic[c][mask].mean()), 4) for c in picked))
    stack = (np.stack(masks) if masks else np.zeros((0, height, width), bool)).astype(np.uint8)
    semantic_masks = {name: (present[c] & inside).astype(np.uint8)
                      for c, name in enumerate(CLASSES) if (present[c] & inside).any()}
    levels, filled = fill_levels(stack, inside)
    return VesselContent(instance_masks=stack, classes=tuple(classes),
                         class_probabilities=tuple(probabilities), semantic_masks=semantic_masks,
                         fill_levels=levels, filled=filled, method=model)


def torch_runner(net: VesselContentNet) -> Runner:
    """A ``run`` for :func:`predict` calling ``net`` in evaluation mode without gradients."""

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        net.eval()
        with torch.no_grad():
            semantic, instances = net(torch.from_numpy(batch))
        return semantic.numpy(), instances.numpy()

    return run


def _builder(width_factor: float) -> ArchitectureBuilder:
    def build(manifest: ModelManifest) -> VesselContentNet:
        """The untrained network of a vessel-content manifest.

        Raises
        ------
        ValueError
            If the manifest gives other than 4 input channels or other outputs.
        """
        if manifest.input_channels != INPUT_CHANNELS:
            raise ValueError(f"input_channels: the vessel-content network takes {INPUT_CHANNELS} "
                             f"(BGR + vessel mask), manifest {manifest.origin or manifest.name} says "
                             f"{manifest.input_channels}")
        if tuple(manifest.outputs) != OUTPUTS:
            raise ValueError(f"outputs: the vessel-content network returns {list(OUTPUTS)}, manifest "
                             f"{manifest.origin or manifest.name} says {list(manifest.outputs)}")
        return VesselContentNet(width_factor)

    return build


_BUILDERS = {name: _builder(factor) for factor, name in ARCHITECTURES.items()}

build_for_manifest = _BUILDERS[ARCHITECTURE]
"""The seed's network for a manifest (ValueError for other channels or outputs)."""


def register() -> None:
    """Register the vessel-content architectures with the shared model stack (idempotent)."""
    for name, builder in _BUILDERS.items():
        register_architecture(name, builder)


register()
