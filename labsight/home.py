"""The LabSight home directory ($LABSIGHT_HOME, default ./.labsight): data and endpoints of `up`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labsight.config import address_env_var

ENDPOINTS_FILE = "endpoints.json"


def home_dir() -> Path:
    """$LABSIGHT_HOME, or ``.labsight`` in the current directory."""
    return Path(os.environ.get("LABSIGHT_HOME", ".labsight")).resolve()


@dataclass
class Endpoints:
    """Where a running ``labsight up`` can be reached."""

    redis_url: str
    key_prefix: str
    gateway: str
    services: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    token: str = ""
    pid: int = 0

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
