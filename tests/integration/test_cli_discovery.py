"""The CLI finds the gateway of `labsight up` from any folder, and says what is wrong when it cannot."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from labsight.catalog import GATEWAY
from labsight.cli import main
from labsight.config import Settings
from labsight.home import Endpoints, home_dir, write_endpoints
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer
from services.gateway.servicer import register as register_gateway

Serve = Callable[..., RunningServer]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose `up` would record its endpoints in the default home, and a CLI
    run from another folder with no address configured."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    for name in ("LABSIGHT_HOME", "XDG_STATE_HOME", "LABSIGHT_GATEWAY_ADDR", "LABSIGHT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "work"


def _record(gateway: str) -> None:
    write_endpoints(Endpoints(redis_url="redis://127.0.0.1:1/0", key_prefix="labsight",
                              gateway=gateway, pid=os.getpid()))


def test_cli_finds_the_gateway_of_up_from_another_folder(
    elsewhere: Path, serve: Serve, settings: Settings, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    (elsewhere.parent / "lab").mkdir()
    monkeypatch.chdir(elsewhere.parent / "lab")  # where `up` ran
    _record(gateway.address)
    monkeypatch.chdir(elsewhere)
    assert main(["pipelines"]) == 0
    assert "fractal" in capsys.readouterr().out


def test_cli_without_up_says_how_to_start_it(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pipelines"]) == 2
    error = capsys.readouterr().err
    assert f"no `labsight up` is running (no endpoints in {home_dir()})" in error
    assert "start it with `labsight up`" in error
    assert "50051" not in error


def test_cli_names_the_recorded_gateway_that_does_not_answer(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    _record(address)
    assert main(["status", "some-job"]) == 2
    error = capsys.readouterr().err
    assert "UNAVAILABLE" in error
    assert f"the gateway of `labsight up` at {address}" in error
    assert str(home_dir() / "endpoints.json") in error
