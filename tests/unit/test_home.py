"""Where the CLI and SDK look for `labsight up`: a per-user home, found from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from labsight.client import LabSightClient
from labsight.errors import GatewayNotFoundError, UnavailableError
from labsight.home import Endpoints, GatewayNotFound, home_dir, running_endpoints, write_endpoints


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $HOME without LABSIGHT_HOME or XDG_STATE_HOME, and a working folder elsewhere."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("LABSIGHT_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("LABSIGHT_GATEWAY_ADDR", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "user"


def test_default_home_is_the_users_state_directory(user_home: Path) -> None:
    assert home_dir() == user_home / ".local" / "state" / "labsight"


def test_xdg_state_home_moves_the_home(
    user_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert home_dir() == tmp_path / "state" / "labsight"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # the XDG spec says: ignore it
    assert home_dir() == user_home / ".local" / "state" / "labsight"


def test_labsight_home_wins(user_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("LABSIGHT_HOME", "here")
    assert home_dir() == Path("here").resolve()


def _endpoints(pid: int) -> Endpoints:
    return Endpoints(redis_url="redis://127.0.0.1:1/0", key_prefix="labsight",
                     gateway="127.0.0.1:1", pid=pid)


def test_no_up_says_how_to_start_one(user_home: Path) -> None:
    with pytest.raises(GatewayNotFound) as error:
        running_endpoints()
    message = str(error.value)
    assert "no `labsight up` is running" in message
    assert str(home_dir()) in message and "start it with `labsight up`" in message


def test_endpoints_of_an_up_that_exited_are_not_used(user_home: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_endpoints(_endpoints(gone.pid))
    with pytest.raises(GatewayNotFound, match=f"pid {gone.pid}, which has exited"):
        running_endpoints()


def test_endpoints_of_a_running_up_are_found_from_any_folder(user_home: Path) -> None:
    write_endpoints(_endpoints(os.getpid()))
    assert running_endpoints().gateway == "127.0.0.1:1"


def test_sdk_without_up_says_how_to_start_it(user_home: Path) -> None:
    with pytest.raises(GatewayNotFound, match="no `labsight up` is running"):
        LabSightClient()


def test_sdk_without_up_raises_a_typed_unavailable_error(user_home: Path) -> None:
    with pytest.raises(UnavailableError) as error:
        LabSightClient()
    assert isinstance(error.value, GatewayNotFoundError)
    assert isinstance(error.value, ConnectionError)  # what callers caught before
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "start it with `labsight up`" in error.value.details()
