"""Serving a repository's models: engines per (model, layer) behind dynamic batchers, in a bounded cache.

Like Triton, a :class:`ModelServer` loads a model on first use (or at start,
for preloaded ones), runs ``instances`` copies of it, each taking the next
batch a :class:`~labsight.runtime.batching.DynamicBatcher` gathers from
concurrent requests, and unloads the least recently used models when their
memory exceeds the budget. Every model service serves its repository this way.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labsight.config import env_flag, env_float, env_int
from labsight.errors import InvalidArgument, NotFound
from labsight.home import home_dir
from labsight.models.device import Device, device_from_env
from labsight.models.engine_cache import EngineCache
from labsight.models.engines import Backend, Engine, build_engines, build_layer_index, engine_backend
from labsight.models.layers import LayerIndex
from labsight.models.manifest import ModelManifest
from labsight.models.repository import ModelRepository, model_dirs_from_env
from labsight.runtime.batching import BatchFunction, DynamicBatcher
from labsight.runtime.cpus import usable_cpus

PRELOAD_ENV = "LABSIGHT_PRELOAD_MODELS"
"""The features service's preload list; other services name their own variable."""

RUN_ROWS_ENV = "LABSIGHT_ORT_RUN_ROWS"


@dataclass(frozen=True)
class ServingConfig:
    """How a model service runs its models (environment variables in brackets).

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
        [LABSIGHT_MAX_QUEUE_DELAY_MS, default 5]. With ``run_rows`` on ONNX Runtime, a free
        instance starts as soon as one run's slice is queued (the batcher's preferred size):
        a lone ClassifyCells request of 14 cells answered in 17-21 ms instead of 28-30.
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
    run_rows : int
        Most rows one ONNX Runtime run takes per intra-op thread of its instance; a
        larger batch runs in slices of ``run_rows * threads`` rows, which keeps a CNN's
        activations in the CPU's caches (see :class:`~labsight.models.engines.OnnxEngine`;
        measured with one thread per instance); 0 runs every batch whole
        [LABSIGHT_ORT_RUN_ROWS, default 0; the features service's default is
        ``FEATURES_RUN_ROWS``, the segmentation service's ``SEGMENTATION_RUN_ROWS``, the
        classifier's ``CLASSIFIER_RUN_ROWS``].
    preload : tuple of str
        ``model`` or ``model:layer`` entries loaded (and run once) before the
        service reports SERVING, as Triton loads its repository at start; others
        load on first use [``preload_env``, comma-separated, default none].
        Preloaded layers stay loaded.
    preload_env : str
        The variable ``preload`` is read from (LABSIGHT_PRELOAD_MODELS for the
        features service), named in errors.
    engine_cache_bytes : int
        Memory the loaded layers' engines may hold (every instance, estimated from
        the weights each layer needs); beyond it the least recently used layer that
        no request is using is unloaded [LABSIGHT_ENGINE_CACHE_BYTES, default 1 GiB:
        with two instances, 4 Inception-v3 ``avgpool`` or 24 EfficientNet-Lite0
        ``avgpool`` layers, more of earlier layers].
    """

    model_dirs: tuple[Path, ...] = ()
    cache_dir: Path = Path(".labsight/models")
    device: Device = "auto"
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    threads: int = 0
    instances: int = 0
    spin: bool = False
    shrink_arena: bool = False
    run_rows: int = 0
    preload: tuple[str, ...] = ()
    preload_env: str = PRELOAD_ENV
    engine_cache_bytes: int = 1 << 30

    @classmethod
    def from_env(cls, preload_env: str = PRELOAD_ENV, default_run_rows: int | None = None
                 ) -> ServingConfig:
        """The configuration from LABSIGHT_* environment variables, preloads from ``preload_env``;
        ``run_rows`` is ``default_run_rows`` (else the class's) when LABSIGHT_ORT_RUN_ROWS is unset.

        Raises
        ------
        ValueError
            Naming the variable that holds a malformed value.
        """
        return cls(
            model_dirs=tuple(model_dirs_from_env()),
            cache_dir=Path(os.environ.get("LABSIGHT_MODEL_CACHE", "") or home_dir() / "models"),
            device=device_from_env(),
            max_batch_size=env_int("LABSIGHT_MAX_BATCH_SIZE", 32),
            max_queue_delay_ms=env_float("LABSIGHT_MAX_QUEUE_DELAY_MS", 5.0),
            threads=max(0, env_int("LABSIGHT_ORT_THREADS", 0)),
            instances=max(0, env_int("LABSIGHT_MODEL_INSTANCES", 0)),
            spin=env_flag("LABSIGHT_ORT_SPIN"),
            shrink_arena=env_flag("LABSIGHT_ORT_ARENA_SHRINK"),
            run_rows=max(0, env_int(RUN_ROWS_ENV, cls.run_rows if default_run_rows is None
                                    else default_run_rows)),
            preload=tuple(
                entry.strip() for entry in os.environ.get(preload_env, "").split(",") if entry.strip()
            ),
            preload_env=preload_env,
            engine_cache_bytes=max(0, env_int("LABSIGHT_ENGINE_CACHE_BYTES", 1 << 30)),
        )

    def engine_layout(self, on_cuda: bool) -> tuple[int, int]:
        """(instances, ONNX Runtime threads per instance), the automatic values resolved."""
        cpus = usable_cpus()
        instances = self.instances or (1 if on_cuda else min(2, cpus))
        return instances, self.threads or max(1, cpus // instances)


@dataclass(frozen=True)
class ServedModel:
    """One model (or one layer of it): its engines behind the dynamic batcher that feeds them.

    Batches of the manifest's input shape go through the batcher; a
    ``dynamic_size`` model also takes other heights and widths, run at once on
    the next engine (batches of different sizes cannot be joined). Feed such a
    model tiles of ``manifest.input_size`` to have them batched.
    """

    manifest: ModelManifest
    batcher: DynamicBatcher
    engines: tuple[Engine, ...]
    output_names: tuple[str, ...]
    _next_engine: Iterator[int] = field(default_factory=itertools.count, compare=False, repr=False)

    @property
    def nbytes(self) -> int:
        """Estimated memory held by every instance's engine."""
        return sum(engine.nbytes for engine in self.engines)

    def run(self, batch: np.ndarray, field: str = "batch") -> dict[str, np.ndarray]:
        """The outputs of an (N, C, H, W) float32 batch by name, row i for input i.

        Raises
        ------
        InvalidArgument
            If the batch's shape does not fit the model, naming ``field``.
        """
        batch = np.asarray(batch, np.float32)
        channels, height, width = self.manifest.input_shape
        if batch.ndim != 4 or batch.shape[1] != channels or len(batch) == 0:
            raise InvalidArgument(
                f"{field}: expected a (N, {channels}, H, W) batch with N >= 1 for model "
                f"{self.manifest.name!r}, got shape {list(batch.shape)}"
            )
        if batch.shape[2:] != (height, width):
            if not self.manifest.dynamic_size:
                raise InvalidArgument(
                    f"{field}: model {self.manifest.name!r} takes {height}x{width} inputs, "
                    f"got {batch.shape[2]}x{batch.shape[3]}"
                )
            engine = self.engines[next(self._next_engine) % len(self.engines)]
            return engine.outputs(batch)
        result = self.batcher.run(batch)
        if len(self.output_names) == 1:
            return {self.output_names[0]: result}
        # A packed field is a strided view of every output's rows; each output gets its own array.
        return {name: np.ascontiguousarray(result[name]) for name in self.output_names}

    def close(self) -> None:
        """Finish queued batches, stop the batcher's threads, then release the engines."""
        self.batcher.close(drop_metrics=True)
        for engine in self.engines:
            engine.close()


def _packed(engine: Engine) -> BatchFunction:
    """The engine's outputs as one structured array (a field per output), so the batcher can
    split and join the rows of several outputs at once."""

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = engine.outputs(batch)
        fields = [(name, np.float32, value.shape[1:]) for name, value in outputs.items()]
        packed = np.empty(len(batch), fields)
        for name, value in outputs.items():
            packed[name] = value
        return packed

    return run


class ModelServer:
    """Serves every model of a repository, one engine set and dynamic batcher per (model, layer).

    Engines load on first use and stay in an :class:`EngineCache` bounded by
    ``config.engine_cache_bytes``; concurrent requests for the same layer share
    its batcher, so single-image requests from many clients run as batches.
    Each model's layers are listed once (:class:`LayerIndex`), so an unknown
    layer is refused by a lookup, without loading anything.

    Parameters
    ----------
    repository : ModelRepository
        The service's models.
    config : ServingConfig
        Device, batching, instances, cache budget and preloads.
    """

    def __init__(self, repository: ModelRepository, config: ServingConfig) -> None:
        self.repository = repository
        self.config = config
        self.engines: EngineCache[ServedModel] = EngineCache(config.engine_cache_bytes)
        self._indexes: dict[tuple[str, str, Backend], Future[LayerIndex]] = {}
        self._lock = threading.Lock()

    def run(self, model: str, batch: np.ndarray, layer: str = "") -> dict[str, np.ndarray]:
        """The outputs of one model (or one layer of it) for an (N, C, H, W) float32 batch.

        Parameters
        ----------
        model : str
            Model name in the repository.
        batch : ndarray
            Preprocessed inputs of the model's channels (and size, unless it is
            ``dynamic_size``).
        layer : str
            Public layer name, module path or graph value name; ``""`` for the
            model's outputs, keyed by the manifest's output names.

        Raises
        ------
        NotFound
            Unknown model.
        InvalidArgument
            Unknown layer or a batch that does not fit the model.
        """
        manifest = self.repository.get(model)
        with self.served(manifest, layer) as served:
            return served.run(batch)

    def served(
        self, manifest: ModelManifest, layer: str = "", pin: bool = False
    ) -> AbstractContextManager[ServedModel]:
        """A lease on the engines and batcher of one layer (``""``: the outputs), built on first use.

        Raises
        ------
        InvalidArgument
            If the model has no such layer (nothing is loaded for it).
        """
        backend = self.backend(manifest, layer)
        target = self.layer_index(manifest, backend).target(layer)
        key = (manifest.name, manifest.version, backend, target)
        return self.engines.lease(key, lambda: self._load(manifest, layer, backend, target), pin)

    def preload(self) -> None:
        """Build, run once and pin the engines of every ``config.preload`` entry.

        Raises
        ------
        NotFound, InvalidArgument
            An unknown model or layer, naming the preload variable and entry.
        """
        for entry in self.config.preload:
            name, _, layer = entry.partition(":")
            try:
                manifest = self.repository.get(name)
                with self.served(manifest, layer or manifest.default_layer, pin=True) as loaded:
                    warm_up = np.zeros((1, *manifest.input_shape), np.float32)
                    for engine in loaded.engines:
                        engine.run(warm_up)
            except (NotFound, InvalidArgument) as error:
                raise type(error)(f"{self.config.preload_env} entry {entry!r}: {error}") from None

    def close(self) -> None:
        """Unload every model no request is using (batcher threads stopped, engines closed)."""
        self.engines.clear()

    def backend(self, manifest: ModelManifest, layer: str = "") -> Backend:
        """The backend that serves this layer of this model under the device policy."""
        return engine_backend(manifest, layer, self.config.device)

    def listed_layer_paths(self, manifest: ModelManifest) -> list[str]:
        """The names besides the public ones that the model accepts as a layer, if already listed.

        Never loads anything: a model is listed by its first request or by
        preloading, and the answer is empty until then.
        """
        backend = self.backend(manifest, manifest.default_layer)
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

    def _load(self, manifest: ModelManifest, layer: str, backend: Backend, target: str) -> ServedModel:
        instances, threads = self.config.engine_layout(backend == "torch")
        engines = build_engines(
            manifest, target, backend, instances, self.config.cache_dir, threads, self.config.spin,
            self.config.shrink_arena, self.config.run_rows * threads,
        )
        names = engines[0].output_names
        on_cpu = backend == "onnx"
        batcher = DynamicBatcher(
            [engine.run if len(names) == 1 else _packed(engine) for engine in engines],
            self.config.max_batch_size,
            self.config.max_queue_delay_ms,
            name=f"{manifest.name}:{layer}" if layer else manifest.name,
            even_shares=on_cpu,  # runs in slices of run_rows: size buys nothing
            preferred_batch_size=self.config.run_rows * threads if on_cpu and self.config.run_rows else None,
        )
        return ServedModel(manifest, batcher, tuple(engines), names)
