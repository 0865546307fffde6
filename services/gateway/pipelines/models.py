"""The features service's models and layers as the gateway knows them, to check jobs at submit."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

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


class ModelCatalog:
    """Models by name from FeatureService.ListModels, cached for ``ttl_s`` seconds.

    When the features service cannot be asked (not connected, starting,
    restarting), :meth:`models` answers None and model checks are skipped: the
    job is accepted, and the worker, which waits for the service, finds out.
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
        self._models: dict[str, features_pb2.ModelInfo] | None = None
        self._expires = -math.inf

    def connect(self, clients: ServiceClients | None) -> None:
        """Ask the features service of ``clients`` from now on (None: nobody), forgetting the last one."""
        with self._lock:
            if self._clients is not None:
                self._clients.close()
            self._clients = clients
            self._models = None
            self._expires = -math.inf

    def models(self) -> dict[str, features_pb2.ModelInfo] | None:
        """The served models by name, or None when the features service does not answer."""
        with self._lock:
            if self._clients is None:
                return None
            if self._clock() < self._expires:
                return self._models
            try:
                reply = self._clients.features.ListModels(
                    features_pb2.ListModelsRequest(), timeout=self.timeout_s
                )
            except grpc.RpcError as error:
                log.warning("features service did not list its models (%s); jobs go unchecked "
                            "for %.0f s", error.code(), RETRY_AFTER_FAILURE_S)
                self._models, self._expires = None, self._clock() + RETRY_AFTER_FAILURE_S
                return None
            self._models = {model.name: model for model in reply.models}
            self._expires = self._clock() + self.ttl_s
            return self._models

    def check(self, model: str) -> features_pb2.ModelInfo | None:
        """The model's description if the service answers; refuses an unknown model.

        Layers are not checked here: besides its public names (``info.layers``)
        a model accepts any of its module paths, which ListModels does not list,
        so the features service checks the layer when the job runs.

        Raises
        ------
        InvalidArgument
            Naming ``params.model``.
        """
        models = self.models()
        if models is None:
            return None
        info = models.get(model)
        if info is None:
            raise InvalidArgument(f"params.model: unknown model {echo(model)}; models: {sorted(models)}")
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
