"""``serve_web_page`` as the gateway starts it: the page on $LABSIGHT_WEB_PORT calls the
gateway's fixed gRPC port on loopback; with the gateway's TLS files the page is HTTPS and
its calls to the gateway are TLS too."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from labsight.catalog import GATEWAY
from labsight.config import Settings
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer
from labsight.web import WEB_PORT_ENV
from labsight.web.server import serve_web_page
from services.gateway.auth import create_token
from services.gateway.servicer import register as register_gateway
from tests.integration.test_auth import _self_signed


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_gateways_page_calls_its_grpc_port_with_the_callers_token(
    serve: Callable[..., RunningServer], settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, tls: bool,
) -> None:
    token = create_token(tmp_path / "tokens", "lab-web")
    cert, key = _self_signed(tmp_path) if tls else ("", "")
    gateway_settings = Settings(**{**vars(settings), "allow_anonymous": False, "port": free_port(),
                                   "tokens_file": str(tmp_path / "tokens"),
                                   "tls_cert": str(cert), "tls_key": str(key)})
    monkeypatch.setenv(WEB_PORT_ENV, "-1")  # register's own page stays off: this test stops its own
    serve(register_gateway, GATEWAY.grpc_services, gateway_settings)
    monkeypatch.setenv(WEB_PORT_ENV, str(free_port()))
    web = serve_web_page(gateway_settings)
    assert web is not None and web.url.startswith("https://" if tls else "http://")
    context = ssl.create_default_context(cafile=str(cert)) if tls else None
    try:
        request = urllib.request.Request(web.url + "api/pipelines",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            assert "fractal" in [p["name"] for p in json.loads(answer.read())]
    finally:
        web.stop()


def test_no_page_on_a_free_grpc_port_or_when_switched_off(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.port == 0 and serve_web_page(settings) is None
    monkeypatch.setenv(WEB_PORT_ENV, "-1")
    assert serve_web_page(Settings(**{**vars(settings), "port": free_port()})) is None
