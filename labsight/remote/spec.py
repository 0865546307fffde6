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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REMOTE_FORMATS = ("torchserve", "tfserving")
"""Manifest formats whose model runs on an external server."""

ENCODINGS = ("npy", "json")
"""How a TorchServe handler's bytes are written (see :mod:`labsight.remote.torchserve`)."""

DEFAULT_INPUT = {"torchserve": "data", "tfserving": "input"}
"""The input key a manifest that names none uses, per format."""


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
             "channels_last", "timeout_s"}
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
    )
