"""Deep features of image batches from any served model and layer, through the shared model server."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from labsight.config import env_int
from labsight.models import ModelManifest, ModelServer, ServingConfig
from labsight.models.serving import PRELOAD_ENV
from services.features.deep import PoolingMode, check_images, feature_columns, pool, preprocess
from services.features.models import DEFAULT_MODEL

FEATURES_RUN_ROWS = 2
"""Rows per ONNX Runtime run and intra-op thread of the features service's models
[LABSIGHT_ORT_RUN_ROWS]: a batch the batcher gathered runs in slices this small (times the
threads of an instance), so the activations stay in the CPU's caches."""


@dataclass(frozen=True)
class ExtractorConfig(ServingConfig):
    """How the features service runs its models: :class:`ServingConfig` and the features' own settings.

    Attributes
    ----------
    default_model : str
        Model used when a request names none [LABSIGHT_DEFAULT_MODEL].
    max_images_per_request : int
        Most images one ExtractDeepFeatures call may carry
        [LABSIGHT_MAX_IMAGES_PER_REQUEST, default 4096].
    run_rows : int
        As :class:`ServingConfig`'s, by default ``FEATURES_RUN_ROWS`` [LABSIGHT_ORT_RUN_ROWS].
    """

    default_model: str = DEFAULT_MODEL
    max_images_per_request: int = 4096
    run_rows: int = FEATURES_RUN_ROWS

    @classmethod
    def from_env(cls, preload_env: str = PRELOAD_ENV) -> ExtractorConfig:
        """The configuration from LABSIGHT_* environment variables (preloads from ``preload_env``)."""
        return cls(
            **vars(ServingConfig.from_env(preload_env, default_run_rows=cls.run_rows)),
            default_model=os.environ.get("LABSIGHT_DEFAULT_MODEL", DEFAULT_MODEL),
            max_images_per_request=max(1, env_int("LABSIGHT_MAX_IMAGES_PER_REQUEST", 4096)),
        )


@dataclass(frozen=True)
class DeepFeatures:
    """Features of a batch of images: one row per image."""

    model: ModelManifest
    layer: str
    columns: list[str]
    values: np.ndarray


class DeepFeatureExtractor(ModelServer):
    """Serves every model of the features repository and turns images into feature tables.

    The :class:`~labsight.models.ModelServer` it is keeps one engine set and
    dynamic batcher per (model, layer), so single-image requests from many
    clients run as batches; this class adds the features' preprocessing,
    pooling and column names.
    """

    config: ExtractorConfig

    def extract(
        self,
        images: Sequence[np.ndarray],
        model: str = "",
        layer: str = "",
        pooling: PoolingMode = "average",
        field: str = "images",
        before_batch: Callable[[], None] | None = None,
    ) -> DeepFeatures:
        """Features of ``images`` from one layer of one model.

        Parameters
        ----------
        images : sequence of ndarray
            (H, W, 3) RGB or (H, W) grey images, uint8 or uint16, any size.
        model, layer : str
            Model name and layer (public name, module path or graph value name);
            empty for the defaults.
        pooling : {"average", "max", "none"}
            Reduction of the layer's activation maps.
        field : str
            Request field the images came from, for error messages.
        before_batch : callable, optional
            Called before each slice of batches is run; what it raises stops the work
            there (how a servicer stops for a caller that has gone).

        Raises
        ------
        NotFound
            Unknown model.
        ValueError
            Bad images or pooling, an unknown layer, or more images than
            ``max_images_per_request``, naming the field.
        """
        check_images(images, field)
        if len(images) > self.config.max_images_per_request:
            raise ValueError(
                f"{field}: {len(images)} images in one request; at most "
                f"{self.config.max_images_per_request} (send the rest in further requests)"
            )
        manifest = self.repository.get(model or self.config.default_model)
        layer = layer or manifest.default_layer
        with self.served(manifest, layer) as served:
            # Slices of a few batches bound the memory of model inputs: small images grow to
            # the model's input size (a 224x224 float input is 0.6 MB).
            step = self.config.max_batch_size * len(served.engines)
            blocks = []
            for start in range(0, len(images), step):
                if before_batch is not None:
                    before_batch()
                batch = preprocess(
                    images[start : start + step], manifest.input_size, manifest.preprocessing, field
                )
                blocks.append(pool(served.run(batch, field)[served.output_names[0]], pooling))
        values = np.concatenate(blocks)
        return DeepFeatures(manifest, layer, feature_columns(layer, values.shape[1]), values)
