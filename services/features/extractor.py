"""Deep features of image batches from any served model and layer, through dynamic batchers."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labsight.config import env_flag, env_float, env_int
from labsight.errors import NotFound
from labsight.home import home_dir
from labsight.runtime.batching import DynamicBatcher
from labsight.runtime.cpus import usable_cpus
from services.features.deep import PoolingMode, check_images, feature_columns, pool, preprocess
from services.features.models import (
    DEFAULT_MODEL,
    ModelManifest,
    ModelRepository,
    build_engine,
    model_dirs_from_env,
    uses_cuda,
)


@dataclass(frozen=True)
class ExtractorConfig:
    """How the features service runs its models (environment variables in brackets).

    Attributes
    ----------
    model_dirs : list of Path
        Operator model directories [LABSIGHT_MODEL_DIR, ``os.pathsep``-separated].
    cache_dir : Path
        Exported ONNX files [LABSIGHT_MODEL_CACHE, default $LABSIGHT_HOME/models].
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda`` [LABSIGHT_DEVICE].
    max_batch_size : int
        Most images run together [LABSIGHT_MAX_BATCH_SIZE, default 32].
    max_queue_delay_ms : float
        Longest a request waits for others to join its batch
        [LABSIGHT_MAX_QUEUE_DELAY_MS, default 5].
    threads : int
        ONNX Runtime intra-op threads per instance; 0 shares the usable CPUs (the
        affinity mask, capped by a container's CPU limit) between the instances
        [LABSIGHT_ORT_THREADS].
    instances : int
        Copies of each served layer's engine, each taking the next batch when free,
        like Triton's instance groups; 0 for one on CUDA and two on a CPU with two
        or more cores [LABSIGHT_MODEL_INSTANCES]. Two single-threaded ONNX Runtime
        instances kept a shared 2-core machine busier than one with two threads,
        whose threads wait for each other whenever another process takes a core.
    spin : bool
        ONNX Runtime's idle threads busy-wait for work; off leaves the cores to the
        other processes [LABSIGHT_ORT_SPIN, default off].
    default_model : str
        Model used when a request names none [LABSIGHT_DEFAULT_MODEL].
    max_images_per_request : int
        Most images one ExtractDeepFeatures call may carry
        [LABSIGHT_MAX_IMAGES_PER_REQUEST, default 4096].
    preload : tuple of str
        ``model`` or ``model:layer`` entries loaded (and run once) before the
        service reports SERVING, as Triton loads its repository at start; others
        load on first use [LABSIGHT_PRELOAD_MODELS, comma-separated, default none].
    """

    model_dirs: tuple[Path, ...] = ()
    cache_dir: Path = Path(".labsight/models")
    device: str = "auto"
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    threads: int = 0
    instances: int = 0
    spin: bool = False
    default_model: str = DEFAULT_MODEL
    max_images_per_request: int = 4096
    preload: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> ExtractorConfig:
        """The configuration from LABSIGHT_* environment variables."""
        device = os.environ.get("LABSIGHT_DEVICE", "auto")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"LABSIGHT_DEVICE must be auto, cpu or cuda, got {device!r}")
        return cls(
            model_dirs=tuple(model_dirs_from_env()),
            cache_dir=Path(os.environ.get("LABSIGHT_MODEL_CACHE", "") or home_dir() / "models"),
            device=device,
            max_batch_size=env_int("LABSIGHT_MAX_BATCH_SIZE", 32),
            max_queue_delay_ms=env_float("LABSIGHT_MAX_QUEUE_DELAY_MS", 5.0),
            threads=max(0, env_int("LABSIGHT_ORT_THREADS", 0)),
            instances=max(0, env_int("LABSIGHT_MODEL_INSTANCES", 0)),
            spin=env_flag("LABSIGHT_ORT_SPIN"),
            default_model=os.environ.get("LABSIGHT_DEFAULT_MODEL", DEFAULT_MODEL),
            max_images_per_request=max(1, env_int("LABSIGHT_MAX_IMAGES_PER_REQUEST", 4096)),
            preload=tuple(
                entry.strip()
                for entry in os.environ.get("LABSIGHT_PRELOAD_MODELS", "").split(",")
                if entry.strip()
            ),
        )

    def engine_layout(self, on_cuda: bool) -> tuple[int, int]:
        """(instances, ONNX Runtime threads per instance), the automatic values resolved."""
        cpus = usable_cpus()
        instances = self.instances or (1 if on_cuda else min(2, cpus))
        return instances, self.threads or max(1, cpus // instances)


@dataclass(frozen=True)
class DeepFeatures:
    """Features of a batch of images: one row per image."""

    model: ModelManifest
    layer: str
    columns: list[str]
    values: np.ndarray


class DeepFeatureExtractor:
    """Serves every model of a repository, one engine and one dynamic batcher per (model, layer).

    Engines load on first use; concurrent requests for the same layer share
    its batcher, so single-image requests from many clients run as batches.
    """

    def __init__(self, repository: ModelRepository, config: ExtractorConfig) -> None:
        self.repository = repository
        self.config = config
        self._batchers: dict[tuple[str, str, str], DynamicBatcher] = {}
        self._lock = threading.Lock()

    def extract(
        self,
        images: Sequence[np.ndarray],
        model: str = "",
        layer: str = "",
        pooling: PoolingMode = "average",
        field: str = "images",
    ) -> DeepFeatures:
        """Features of ``images`` from one layer of one model.

        Parameters
        ----------
        images : sequence of ndarray
            (H, W, 3) RGB or (H, W) grey images, uint8 or uint16, any size.
        model, layer : str
            Model name and layer (public name or module path); empty for the defaults.
        pooling : {"average", "max", "none"}
            Reduction of the layer's activation maps.
        field : str
            Request field the images came from, for error messages.

        Raises
        ------
        NotFound
            Unknown model or layer.
        ValueError
            Bad images or pooling, or more images than ``max_images_per_request``,
            naming the field.
        """
        check_images(images, field)
        if len(images) > self.config.max_images_per_request:
            raise ValueError(
                f"{field}: {len(images)} images in one request; at most "
                f"{self.config.max_images_per_request} (send the rest in further requests)"
            )
        manifest = self.repository.get(model or self.config.default_model)
        layer = layer or manifest.default_layer
        batcher = self.batcher(manifest, layer)
        # Slices of a few batches bound the memory of model inputs: small images grow to
        # the model's input size (a 224x224 float input is 0.6 MB).
        step = self.config.max_batch_size * len(batcher.instances)
        blocks = []
        for start in range(0, len(images), step):
            batch = preprocess(
                images[start : start + step], manifest.input_size, manifest.preprocessing, field
            )
            blocks.append(pool(batcher.run(batch), pooling))
        values = np.concatenate(blocks)
        return DeepFeatures(manifest, layer, feature_columns(layer, values.shape[1]), values)

    def preload(self) -> None:
        """Build and run once the engines of every ``config.preload`` entry.

        Raises
        ------
        NotFound
            An unknown model or layer, naming LABSIGHT_PRELOAD_MODELS.
        """
        for entry in self.config.preload:
            name, _, layer = entry.partition(":")
            try:
                manifest = self.repository.get(name)
                batcher = self.batcher(manifest, layer or manifest.default_layer)
            except NotFound as error:
                raise NotFound(f"LABSIGHT_PRELOAD_MODELS entry {entry!r}: {error}") from None
            warm_up = np.zeros((1, 3, *manifest.input_size), np.float32)
            for run_batch in batcher.instances:
                run_batch(warm_up)

    def batcher(self, manifest: ModelManifest, layer: str) -> DynamicBatcher:
        """The dynamic batcher in front of one layer's engine, both built on first use."""
        key = (manifest.name, manifest.version, manifest.module_path(layer))
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                instances, threads = self.config.engine_layout(
                    uses_cuda(manifest, layer, self.config.device)
                )
                engines = [
                    build_engine(
                        manifest, layer, self.config.device, self.config.cache_dir,
                        threads, self.config.spin,
                    )
                    for _ in range(instances)
                ]
                batcher = self._batchers[key] = DynamicBatcher(
                    [engine.run for engine in engines],
                    self.config.max_batch_size,
                    self.config.max_queue_delay_ms,
                    name=f"{manifest.name}:{layer}",
                )
        return batcher
