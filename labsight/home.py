"""The LabSight home directory: data and endpoints of `up`, found by the CLI and SDK from anywhere.

$LABSIGHT_HOME, else the user's XDG state directory ($XDG_STATE_HOME/labsight,
default ~/.local/state/labsight), so a CLI in any folder finds the `up` of the
same user.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labsight.config import address_env_var
from labsight.errors import GatewayNotFoundError

ENDPOINTS_FILE = "endpoints.json"


def home_dir() -> Path:
    """$LABSIGHT_HOME, else $XDG_STATE_HOME/labsight, else ~/.local/state/labsight."""
    if os.environ.get("LABSIGHT_HOME"):
        return Path(os.environ["LABSIGHT_HOME"]).resolve()
    state = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative path here.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "labsight"


@dataclass
class Endpoints:
    """Where a running ``labsight up`` can be reached."""

    redis_url: str
    key_prefix: str
    gateway: str
    services: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    token: str = ""
    service_token: str = ""
    pid: int = 0
    blob_url: str = ""
    """The blob store of large inputs (LABSIGHT_BLOB_URL) that every process must share."""

    def as_environment(self) -> dict[str, str]:
        """The LABSIGHT_* / REDIS_URL variables that make a process use these endpoints."""
        env = {
            "REDIS_URL": self.redis_url,
            "LABSIGHT_KEY_PREFIX": self.key_prefix,
            "LABSIGHT_GATEWAY_ADDR": self.gateway,
        }
        env.update({address_env_var(name): addr for name, addr in self.services.items()})
        if self.token:
            env["LABSIGHT_TOKEN"] = self.token
        if self.service_token:
            env["LABSIGHT_SERVICE_TOKEN"] = self.service_token
        if self.blob_url:
            env["LABSIGHT_BLOB_URL"] = self.blob_url
        return env


def write_endpoints(endpoints: Endpoints, home: Path | None = None) -> Path:
    """Record ``endpoints`` in the home directory (readable by the owner only)."""
    home = home or home_dir()
    home.mkdir(parents=True, exist_ok=True)
    path = home / ENDPOINTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(endpoints), indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_endpoints(home: Path | None = None) -> Endpoints | None:
    """The endpoints recorded by ``labsight up``, or None if there are none."""
    path = (home or home_dir()) / ENDPOINTS_FILE
    if not path.exists():
        return None
    return Endpoints(**json.loads(path.read_text()))


def remove_endpoints(home: Path | None = None) -> None:
    """Forget the endpoints (``up`` has stopped)."""
    ((home or home_dir()) / ENDPOINTS_FILE).unlink(missing_ok=True)


GatewayNotFound = GatewayNotFoundError
"""The name this module has always raised (a ConnectionError, and the SDK's typed
``labsight.errors.GatewayNotFoundError``, an UnavailableError)."""


def running_endpoints(home: Path | None = None) -> Endpoints:
    """The endpoints of the ``labsight up`` running on ``home``.

    Raises
    ------
    GatewayNotFound
        Saying how to start one, if ``home`` has no endpoints or their `up` is gone.
    """
    home = home or home_dir()
    endpoints = read_endpoints(home)
    if endpoints is None:
        raise GatewayNotFound(
            f"no `labsight up` is running (no endpoints in {home}); start it with "
            "`labsight up`, or name a gateway with --gateway or LABSIGHT_GATEWAY_ADDR"
            + ("" if os.environ.get("LABSIGHT_HOME") else " (or set LABSIGHT_HOME to the "
               "home of an `up` started with one)")
        )
    if endpoints.pid and not _process_exists(endpoints.pid):
        raise GatewayNotFound(
            f"no `labsight up` is running: the endpoints in {home} were written by pid "
            f"{endpoints.pid}, which has exited; start it again with `labsight up`"
        )
    return endpoints


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
