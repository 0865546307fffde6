"""The features service's models and layers as the gateway knows them, to check jobs at submit."""

from __future__ import annotations

import difflib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from labsight.config import Settings
from labsight.errors import InvalidArgument, echo
from labsight.v1 import features_pb2
from services.gateway.services import ServiceClients

log = logging.getLogger(__name__)

CATALOG_TTL_S = 30.0
"""How long a model list is used before the features service is asked again."""

RETRY_AFTER_FAILURE_S = 5.0
"""After the features service did not answer, how long submissions go unchecked before asking again."""

LIST_TIMEOUT_S = 2.0
"""A ListModels answer slower than this counts as no answer (a submission waits at most this long)."""

FALLBACK_INPUT_SIDE = 299
"""Input side assumed for costs while the model list is unknown: the largest built-in (Inception-v3)."""


@dataclass(frozen=True)
class ServedModels:
    """One ListModels answer, indexed for the checks of a submission."""

    by_name: dict[str, features_pb2.ModelInfo]
    layer_paths: dict[str, frozenset[str]]
    default_model: str

    @classmethod
    def from_reply(cls, reply: features_pb2.ListModelsResponse) -> ServedModels:
        """Index ``reply`` by model name."""
        return cls(
            {model.name: model for model in reply.models},
            {model.name: frozenset(model.layer_paths) for model in reply.models},
            reply.default_model,
        )


class ModelCatalog:
    """Models and their layers from FeatureService.ListModels, cached for ``ttl_s`` seconds.

    When the features service cannot be asked (not connected, starting,
    restarting, or still listing a model's layers for the first time),
    :meth:`models` answers None and model checks are skipped: the job is
    accepted, and the worker, which waits for the service, finds out.
    Refusing would turn a brief restart of one service into failed submissions.
    """

    def __init__(
        self,
        ttl_s: float = CATALOG_TTL_S,
        timeout_s: float = LIST_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: ServiceClients | None = None
        self._models: ServedModels | None = None
        self._expires = -math.inf

    def connect(self, clients: ServiceClients | None) -> None:
        """Ask the features service of ``clients`` from now on (None: nobody), forgetting the last one."""
        with self._lock:
            if self._clients is not None:
                self._clients.close()
            self._clients = clients
            self._models = None
            self._expires = -math.inf

    def models(self) -> ServedModels | None:
        """The served models, or None when the features service does not answer."""
        with self._lock:
            if self._clients is None:
                return None
            if self._clock() < self._expires:
                return self._models
            try:
                reply = self._clients.features.ListModels(
                    features_pb2.ListModelsRequest(with_layer_paths=True), timeout=self.timeout_s
                )
            except grpc.RpcError as error:
                log.warning("features service did not list its models (%s); jobs go unchecked "
                            "for %.0f s", error.code(), RETRY_AFTER_FAILURE_S)
                self._models, self._expires = None, self._clock() + RETRY_AFTER_FAILURE_S
                return None
            self._models = ServedModels.from_reply(reply)
            self._expires = self._clock() + self.ttl_s
            return self._models

    def check(self, model: str, layer: str = "") -> features_pb2.ModelInfo | None:
        """The description of ``model`` (empty: the service's default) if the service answers;
        refuses an unknown model, or a layer the model does not have.

        A layer may be a public name (``info.layers``) or any name of
        ``info.layer_paths``; a model whose paths the service could not list
        leaves its layers to be checked when the job runs.

        Raises
        ------
        InvalidArgument
            Naming ``params.model`` or ``params.layer``.
        """
        served = self.models()
        if served is None:
            return None
        name = model or served.default_model
        info = served.by_name.get(name)
        if info is None:
            if not model:  # a service that does not name its default model
                return None
            raise InvalidArgument(
                f"params.model: unknown model {echo(model)}; models: {sorted(served.by_name)}"
            )
        paths = served.layer_paths[name]
        if layer and paths and layer not in info.layers and layer not in paths:
            close = difflib.get_close_matches(layer[:200], [*info.layers, *paths], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidArgument(
                f"params.layer: {echo(layer)} is not a layer of model {name!r}; layers: "
                f"{list(info.layers)} or one of its {len(paths)} module paths (ListModels with "
                f"with_layer_paths lists them){hint}"
            )
        return info


MODEL_CATALOG = ModelCatalog()
"""The catalog every pipeline of this process checks against; the gateway connects it."""


def connect_model_catalog(settings: Settings) -> None:
    """Check submissions against the features service named in ``settings`` (the gateway's start).

    Settings without model services (a gateway alone) leave models unchecked.
    """
    if "features" not in settings.service_addresses:
        MODEL_CATALOG.connect(None)
        return
    MODEL_CATALOG.connect(
        ServiceClients(
            settings.service_addresses, settings.grpc_options(), service_token=settings.service_token
        )
    )


def input_pixels(info: features_pb2.ModelInfo | None) -> int:
    """Pixels of one model input (height x width), or the fallback while the model is unknown."""
    if info is None or len(info.input_size) != 2:
        return FALLBACK_INPUT_SIDE * FALLBACK_INPUT_SIDE
    return int(info.input_size[0]) * int(info.input_size[1])
