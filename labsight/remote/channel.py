"""The gRPC channel to a remote model server: plaintext, or TLS with the manifest's certificates
and an optional bearer token."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from labsight.errors import FailedPrecondition
from labsight.remote.spec import RemoteSpec

CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
"""A batch of 32 224x224 RGB float32 images is 19 MB, beyond gRPC's 4 MB default; the server's own
limits (TorchServe's max_request_size and max_response_size) still apply."""


def remote_channel(spec: RemoteSpec, where: str) -> grpc.Channel:
    """A channel to ``spec.endpoint``: TLS when ``spec.tls`` (trusting ``ca_file`` or the system's
    roots, presenting ``cert_file``/``key_file`` when given, checking ``server_name`` when given),
    with ``$token_env`` as a bearer token on every call.

    Raises
    ------
    FailedPrecondition
        Naming ``where`` (the model and server) and the ``remote.<field>`` whose file cannot be
        read or whose token variable is unset.
    """
    if not spec.tls:
        return grpc.insecure_channel(spec.endpoint, CHANNEL_OPTIONS)

    def pem(field: str, path: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise FailedPrecondition(f"{where}: remote.{field} {path}: cannot read it "
                                     f"({error.strerror})") from None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem("ca_file", spec.ca_file),
        private_key=pem("key_file", spec.key_file),
        certificate_chain=pem("cert_file", spec.cert_file),
    )
    if spec.token_env:
        token = os.environ.get(spec.token_env, "")
        if not token:
            raise FailedPrecondition(f"{where}: remote.token_env: ${spec.token_env} is not set in the "
                                     "service's environment")
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    options = list(CHANNEL_OPTIONS)
    if spec.server_name:
        options.append(("grpc.ssl_target_name_override", spec.server_name))
    return grpc.secure_channel(spec.endpoint, credentials, options)
