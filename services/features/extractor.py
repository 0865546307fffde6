"""Deep features of image batches from any served model and layer, through dynamic batchers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labsight.config import env_flag, env_float, env_int
from labsight.errors import InvalidArgument, NotFound
from labsight.home import home_dir
from labsight.runtime.batching import DynamicBatcher
from labsight.runtime.cpus import usable_cpus
from services.features.deep import PoolingMode, check_images, feature_columns, pool, preprocess
from services.features.engine_cache import EngineCache
from services.features.models import (
    DEFAULT_MODEL,
    Backend,
    Engine,
    LayerIndex,
    ModelManifest,
    ModelRepository,
    build_engines,
    build_layer_index,
    engine_backend,
    model_dirs_from_env,
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
    shrink_arena : bool
        Each ONNX Runtime run hands the arena memory its batch took beyond the
        first region back; off, the process keeps what its largest concurrent
        batches needed, as ONNX Runtime and Triton do by default
        [LABSIGHT_ORT_ARENA_SHRINK, default off].
    default_model : str
        Model used when a request names none [LABSIGHT_DEFAULT_MODEL].
    max_images_per_request : int
        Most images one ExtractDeepFeatures call may carry
        [LABSIGHT_MAX_IMAGES_PER_REQUEST, default 4096].
    preload : tuple of str
        ``model`` or ``model:layer`` entries loaded (and run once) before the
        service reports SERVING, as Triton loads its repository at start; others
        load on first use [LABSIGHT_PRELOAD_MODELS, comma-separated, default none].
        Preloaded layers stay loaded.
    engine_cache_bytes : int
        Memory the loaded layers' engines may hold (every instance, estimated from
        the weights each layer needs); beyond it the least recently used layer that
        no request is using is unloaded [LABSIGHT_ENGINE_CACHE_BYTES, default 1 GiB:
        with two instances, 4 Inception-v3 ``avgpool`` or 24 EfficientNet-Lite0
        ``avgpool`` layers, more of earlier layers].
    """

    model_dirs: tuple[Path, ...] = ()
    cache_dir: Path = Path(".labsight/models")
    device: str = "auto"
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    threads: int = 0
    instances: int = 0
    spin: bool = False
    shrink_arena: bool = False
    default_model: str = DEFAULT_MODEL
    max_images_per_request: int = 4096
    preload: tuple[str, ...] = ()
    engine_cache_bytes: int = 1 << 30

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
            shrink_arena=env_flag("LABSIGHT_ORT_ARENA_SHRINK"),
            default_model=os.environ.get("LABSIGHT_DEFAULT_MODEL", DEFAULT_MODEL),
            max_images_per_request=max(1, env_int("LABSIGHT_MAX_IMAGES_PER_REQUEST", 4096)),
            preload=tuple(
                entry.strip()
                for entry in os.environ.get("LABSIGHT_PRELOAD_MODELS", "").split(",")
                if entry.strip()
            ),
            engine_cache_bytes=max(0, env_int("LABSIGHT_ENGINE_CACHE_BYTES", 1 << 30)),
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


@dataclass(frozen=True)
class ServedLayer:
    """One layer's engines behind the dynamic batcher that feeds them."""

    batcher: DynamicBatcher
    engines: tuple[Engine, ...]

    @property
    def nbytes(self) -> int:
        """Estimated memory held by every instance's engine."""
        return sum(engine.nbytes for engine in self.engines)

    def close(self) -> None:
        """Finish queued batches, stop the batcher's threads, then release the engines."""
        self.batcher.close(drop_metrics=True)
        for engine in self.engines:
            engine.close()


class DeepFeatureExtractor:
    """Serves every model of a repository, one engine set and dynamic batcher per (model, layer).

    Engines load on first use and stay in an :class:`EngineCache` bounded by
    ``config.engine_cache_bytes``; concurrent requests for the same layer share
    its batcher, so single-image requests from many clients run as batches.
    Each model's layers are listed once (:class:`LayerIndex`), so an unknown
    layer is refused by a lookup, without loading anything.
    """

    def __init__(self, repository: ModelRepository, config: ExtractorConfig) -> None:
        self.repository = repository
        self.config = config
        self.engines: EngineCache[ServedLayer] = EngineCache(config.engine_cache_bytes)
        self._indexes: dict[tuple[str, str, Backend], Future[LayerIndex]] = {}
        self._lock = threading.Lock()

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
                blocks.append(pool(served.batcher.run(batch), pooling))
        values = np.concatenate(blocks)
        return DeepFeatures(manifest, layer, feature_columns(layer, values.shape[1]), values)

    def preload(self) -> None:
        """Build, run once and pin the engines of every ``config.preload`` entry.

        Raises
        ------
        NotFound, InvalidArgument
            An unknown model or layer, naming LABSIGHT_PRELOAD_MODELS.
        """
        for entry in self.config.preload:
            name, _, layer = entry.partition(":")
            try:
                manifest = self.repository.get(name)
                with self.served(manifest, layer or manifest.default_layer, pin=True) as loaded:
                    warm_up = np.zeros((1, 3, *manifest.input_size), np.float32)
                    for engine in loaded.engines:
                        engine.run(warm_up)
            except (NotFound, InvalidArgument) as error:
                raise type(error)(f"LABSIGHT_PRELOAD_MODELS entry {entry!r}: {error}") from None

    def served(
        self, manifest: ModelManifest, layer: str, pin: bool = False
    ) -> AbstractContextManager[ServedLayer]:
        """A lease on the engines and batcher of one layer, built on first use.

        Raises
        ------
        InvalidArgument
            If the model has no such layer (nothing is loaded for it).
        """
        backend = engine_backend(manifest, layer, self.config.device)
        target = self.layer_index(manifest, backend).target(layer)
        key = (manifest.name, manifest.version, backend, target)
        return self.engines.lease(key, lambda: self._load(manifest, layer, backend, target), pin)

    def listed_layer_paths(self, manifest: ModelManifest) -> list[str]:
        """The names besides the public ones that the model accepts as a layer, if already listed.

        Never loads anything: a model is listed by its first request or by
        preloading, and the answer is empty until then.
        """
        backend = engine_backend(manifest, manifest.default_layer, self.config.device)
        with self._lock:
            listing = self._indexes.get((manifest.name, manifest.version, backend))
        if listing is None or not listing.done() or listing.exception() is not None:
            return []
        return listing.result().paths()

    def layer_index(self, manifest: ModelManifest, backend: Backend) -> LayerIndex:
        """The layers of one model on one backend, listed on first use and kept.

        Concurrent first requests wait for one listing; a failed one is not kept.
        """
        key = (manifest.name, manifest.version, backend)
        with self._lock:
            listing = self._indexes.get(key)
            builder = listing is None
            if listing is None:
                listing = self._indexes[key] = Future()
        if builder:
            try:
                listing.set_result(build_layer_index(manifest, backend, self.config.cache_dir))
            except BaseException as error:
                with self._lock:
                    del self._indexes[key]
                listing.set_exception(error)
        return listing.result()

    def _load(self, manifest: ModelManifest, layer: str, backend: Backend, target: str) -> ServedLayer:
        instances, threads = self.config.engine_layout(backend == "torch")
        engines = build_engines(
            manifest, target, backend, instances, self.config.cache_dir, threads, self.config.spin,
            self.config.shrink_arena,
        )
        batcher = DynamicBatcher(
            [engine.run for engine in engines],
            self.config.max_batch_size,
            self.config.max_queue_delay_ms,
            name=f"{manifest.name}:{layer}",
        )
        return ServedLayer(batcher, tuple(engines))
