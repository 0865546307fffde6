"""The ``[remote]`` table of a ``torchserve`` or ``tfserving`` manifest: where the model runs and how to
call it.

::

    format = "tfserving"                  # or "torchserve"
    outputs = ["embedding"]               # LabSight's names for the outputs, as for any model

    [remote]
    endpoint = "models.lab:8500"          # host:port of the server's gRPC API (required)
    model = "resnet"                      # the server's model name; default: the manifest's name
    version = "3"                         # the server's version; "" (default): its default
    signature = "serving_default"         # tfserving: the SignatureDef; default "serving_default"
    input = "images"                      # the input's key; default "input" (tfserving), "data" (torchserve)
    outputs = ["pool"]                    # the server's output names, one per manifest output, in order;
                                          # default: the manifest's outputs
    encoding = "npy"                      # torchserve: how the handler's bytes are written, "npy" or "json"
    channels_last = false                 # true: send (N, H, W, C) instead of (N, C, H, W)
    timeout_s = 60.0                      # deadline of one batch's call
    tls = true                            # TLS to the server; implied by any field below
    ca_file = "/etc/labsight/ca.pem"      # PEM certificates to trust; default: the system's roots
    cert_file = "/etc/labsight/client.pem"  # a client certificate and its key, for mutual TLS
    key_file = "/etc/labsight/client.key"
    server_name = "models.lab"            # the name the server's certificate must carry, when the
                                          # endpoint's host is another (an IP, a tunnel)
    token_env = "TORCHSERVE_TOKEN"        # environment variable holding a bearer token, sent as
                                          # authorization metadata on every call (TLS only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

REMOTE_FORMATS = ("torchserve", "tfserving")
"""Manifest formats whose model runs on an external server."""

ENCODINGS = ("npy", "json")
"""How a TorchServe handler's bytes are written (see :mod:`labsight.remote.torchserve`)."""

DEFAULT_INPUT = {"torchserve": "data", "tfserving": "input"}
"""The input key a manifest that names none uses, per format."""

TLS_FIELDS = ("ca_file", "cert_file", "key_file", "server_name", "token_env")
"""``[remote]`` fields that only make sense over TLS (each implies ``tls = true``)."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, kw_only=True)
class RemoteSpec:
    """Where a remote model is served and how a batch is sent there.

    Attributes
    ----------
    protocol : {"torchserve", "tfserving"}
        The server's API.
    endpoint : str
        ``host:port`` of its gRPC API.
    model, version : str
        The model's name and version on the server (``version`` "" for its default).
    signature : str
        TF Serving's SignatureDef name.
    input : str
        Key of the input: TorchServe's input map, TF Serving's ``inputs``.
    outputs : tuple of str
        The server's output names, one per manifest output, in order.
    encoding : {"npy", "json"}
        TorchServe's byte convention (ignored by TF Serving).
    channels_last : bool
        Send batches as (N, H, W, C).
    timeout_s : float
        Deadline of one call.
    tls : bool
        Call the server over TLS.
    ca_file, cert_file, key_file : str
        PEM files: certificates to trust ("" for the system's roots), and a client
        certificate with its key for mutual TLS ("" for none).
    server_name : str
        The name the server's certificate must carry ("" for the endpoint's host).
    token_env : str
        Environment variable holding a bearer token for every call ("" for none).
    """

    protocol: str
    endpoint: str
    model: str
    version: str = ""
    signature: str = "serving_default"
    input: str = "input"
    outputs: tuple[str, ...] = ()
    encoding: str = "npy"
    channels_last: bool = False
    timeout_s: float = 60.0
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    token_env: str = ""


def remote_spec(
    protocol: str, table: Any, name: str, outputs: tuple[str, ...], origin: str
) -> RemoteSpec:
    """Check a manifest's ``[remote]`` table and build its spec.

    Parameters
    ----------
    protocol : {"torchserve", "tfserving"}
        The manifest's format.
    table : dict
        The ``[remote]`` table (anything else is refused).
    name : str
        The manifest's model name, the default remote model name.
    outputs : tuple of str
        The manifest's output names, the default remote output names.
    origin : str
        The manifest, named in errors.

    Raises
    ------
    ValueError
        Naming the manifest and the ``remote.<field>`` that is missing or wrong.
    """
    if not isinstance(table, dict):
        raise ValueError(f"{origin}: [remote]: a {protocol} manifest needs a [remote] table with an endpoint")
    known = {"endpoint", "model", "version", "signature", "input", "outputs", "encoding",
             "channels_last", "timeout_s", "tls", *TLS_FIELDS}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{origin}: remote: unknown fields {unknown}; known: {sorted(known)}")

    def text(field: str, default: str | None) -> str:
        value = table.get(field, default)
        if not isinstance(value, str) or (default is None and not value):
            raise ValueError(f"{origin}: remote.{field}: expected a non-empty string, got {value!r}")
        return value

    endpoint = text("endpoint", None)
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{origin}: remote.endpoint: expected host:port, got {endpoint!r}")
    remote_outputs = table.get("outputs", list(outputs))
    if (
        not isinstance(remote_outputs, list)
        or len(remote_outputs) != len(outputs)
        or not all(isinstance(o, str) and o for o in remote_outputs)
    ):
        raise ValueError(
            f"{origin}: remote.outputs: expected {len(outputs)} names (one per output "
            f"{list(outputs)}), got {remote_outputs!r}"
        )
    encoding = text("encoding", "npy")
    if encoding not in ENCODINGS:
        raise ValueError(f"{origin}: remote.encoding: {encoding!r} is not one of {list(ENCODINGS)}")
    channels_last = table.get("channels_last", False)
    if not isinstance(channels_last, bool):
        raise ValueError(f"{origin}: remote.channels_last: expected true or false, got {channels_last!r}")
    timeout = table.get("timeout_s", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"{origin}: remote.timeout_s: expected a positive number, got {timeout!r}")
    security = {field: text(field, "") for field in TLS_FIELDS}
    set_fields = [field for field, value in security.items() if value]
    tls = table.get("tls", bool(set_fields))
    if not isinstance(tls, bool):
        raise ValueError(f"{origin}: remote.tls: expected true or false, got {tls!r}")
    if not tls and set_fields:
        raise ValueError(f"{origin}: remote.tls: false, but {', '.join(f'remote.{f}' for f in set_fields)} "
                         "only work over TLS")
    if bool(security["cert_file"]) != bool(security["key_file"]):
        raise ValueError(f"{origin}: remote.cert_file, remote.key_file: give both (mutual TLS) or neither")
    if security["token_env"] and not _ENV_NAME.match(security["token_env"]):
        raise ValueError(f"{origin}: remote.token_env: expected an environment variable's name, got "
                         f"{security['token_env']!r} (the token itself never goes in a manifest)")
    return RemoteSpec(
        protocol=protocol,
        endpoint=endpoint,
        model=text("model", name) or name,
        version=text("version", ""),
        signature=text("signature", "serving_default") or "serving_default",
        input=text("input", DEFAULT_INPUT[protocol]) or DEFAULT_INPUT[protocol],
        outputs=tuple(remote_outputs),
        encoding=encoding,
        channels_last=channels_last,
        timeout_s=float(timeout),
        tls=tls,
        **security,
    )
