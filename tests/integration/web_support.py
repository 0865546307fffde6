"""A real secured stack for the web page's tests: features, segmentation, classifier and a
token-checking gateway on loopback, a worker thread, and the web page's server calling the gateway."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labsight.catalog import CLASSIFIER, FEATURES, GATEWAY, SEGMENTATION
from labsight.config import Settings
from labsight.runtime.server import RunningServer
from labsight.web.api import WebApi
from labsight.web.server import WebServer, start_web_server
from services.classifier.servicer import register as register_classifier
from services.features.servicer import register as register_features
from services.gateway.auth import create_token
from services.gateway.servicer import register as register_gateway
from services.segmentation.servicer import register as register_segmentation
from tests.conftest import RunningWorker


@dataclass
class WebStack:
    """The web page of a running stack and a token it accepts."""

    web: WebServer
    api: WebApi
    token: str
    gateway: str
    """The gateway's gRPC address, for jobs submitted around the page."""
    other_token: str
    """A token of another tenant."""


@pytest.fixture
def web_stack(serve: Callable[..., RunningServer], settings: Settings,
              worker_thread: Callable[..., RunningWorker], tmp_path: Path) -> Iterator[WebStack]:
    """The model services, a gateway that wants tokens, one worker, and the web page on a free port."""
    features = serve(register_features, FEATURES.grpc_services, settings)
    segmentation = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    settings.service_addresses = {"features": features.address, "segmentation": segmentation.address,
                                  "classifier": classifier.address}
    token = create_token(tmp_path / "tokens", "lab-web")
    other_token = create_token(tmp_path / "tokens", "lab-other")
    secured = Settings(**{**vars(settings), "allow_anonymous": False,
                          "tokens_file": str(tmp_path / "tokens")})
    gateway = serve(register_gateway, GATEWAY.grpc_services, secured)
    worker_thread()
    api = WebApi(gateway.address)
    web = start_web_server(api)
    try:
        yield WebStack(web, api, token, gateway.address, other_token)
    finally:
        web.stop()


def png_bytes(seed: int = 0, size: int = 48) -> bytes:
    """A small grey PNG of random blobs, quick for the fractal pipeline."""
    pixels = (np.random.default_rng(seed).random((size, size)) > 0.6).astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
