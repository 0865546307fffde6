"""The web page the gateway serves: a JSON/HTTP API over the gateway's gRPC API and its static files.

Light to import (``labsight up`` reads the port from here); the server is in
``labsight.web.server``, its handlers in ``labsight.web.api``.
"""

from __future__ import annotations

from labsight.config import env_int

WEB_PORT_ENV = "LABSIGHT_WEB_PORT"
"""Environment variable of the web page's port (-1: no web page)."""
DEFAULT_WEB_PORT = 9449
"""Default port of the web page, beside ``labsight up``'s own metrics (9450)."""


def stack_web_port(up_metrics_port: int) -> int:
    """The web port of a ``labsight up`` stack whose own metrics are on ``up_metrics_port``:
    $LABSIGHT_WEB_PORT, else the port below it (9449 by default, base + 98 with
    ``--base-port``); -1 for none."""
    return env_int(WEB_PORT_ENV, up_metrics_port - 1)
