"""Remote models behind TLS: a TorchServe-protocol server on loopback that asks for a client
certificate and a bearer token, called by a real features service with the manifest's files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from labsight.config import Settings
from labsight.remote import torchserve_inference_pb2 as ts_pb
from labsight.remote import torchserve_inference_pb2_grpc as ts_grpc
from labsight.runtime.server import RunningServer
from labsight.v1 import features_pb2_grpc
from tests.integration.test_auth import _self_signed
from tests.integration.test_remote_backends import (
    SIZE,
    Behaviour,
    TorchServe,
    _error,
    _expected,
    _extract,
    serve_features,
    write_manifests,
)

TOKEN = "remote-s3cret"
TOKEN_ENV = "LABSIGHT_TEST_TORCHSERVE_TOKEN"


class GuardedTorchServe(TorchServe):
    """The test TorchServe, answering only calls that carry the bearer token."""

    def __init__(self, behaviour: Behaviour, seen: list[str]) -> None:
        super().__init__(behaviour)
        self.seen = seen

    def Predictions(self, request: ts_pb.PredictionsRequest, context: grpc.ServicerContext
                    ) -> ts_pb.PredictionResponse:
        sent = dict(context.invocation_metadata()).get("authorization", "")
        self.seen.append(sent)
        if sent != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Token Authorization failed: invalid key")
        return super().Predictions(request, context)


@dataclass
class TlsServer:
    endpoint: str
    server_cert: Path
    client_cert: Path
    client_key: Path
    seen: list[str]


@pytest.fixture
def tls_torchserve(tmp_path: Path) -> Iterator[TlsServer]:
    """The guarded TorchServe on loopback over mutual TLS: its own certificate for 127.0.0.1,
    and it trusts only the client certificate made here."""
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    server_cert, server_key = _self_signed(tmp_path / "server")
    client_cert, client_key = _self_signed(tmp_path / "client")
    seen: list[str] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ts_grpc.add_InferenceAPIsServiceServicer_to_server(GuardedTorchServe(Behaviour(), seen), server)
    credentials = grpc.ssl_server_credentials(
        [(server_key.read_bytes(), server_cert.read_bytes())],
        root_certificates=client_cert.read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield TlsServer(f"127.0.0.1:{port}", server_cert, client_cert, client_key, seen)
    server.stop(0).wait()


def _manifests(root: Path, server: TlsServer) -> Path:
    """Remote manifests reaching the TLS server in several ways, right and wrong."""
    common = (f'version = "1"\ninput_size = [{SIZE}, {SIZE}]\nlicence = "test"\nsource = "test"\n'
              'format = "torchserve"\noutputs = ["embedding", "score"]\n[remote]\n'
              f'endpoint = "{server.endpoint}"\nmodel = "linear"\noutputs = ["emb", "score"]\n')
    mutual = (f'ca_file = "{server.server_cert}"\ncert_file = "{server.client_cert}"\n'
              f'key_file = "{server.client_key}"\n')
    manifests = {
        "secured": f'{mutual}token_env = "{TOKEN_ENV}"\n',
        "named": f'{mutual}server_name = "localhost"\ntoken_env = "{TOKEN_ENV}"\n',
        "no-token": mutual,
        "no-client-cert": f'ca_file = "{server.server_cert}"\ntoken_env = "{TOKEN_ENV}"\n',
        "plaintext": "",
        "unset-token": f'{mutual}token_env = "LABSIGHT_TEST_UNSET_TOKEN"\n',
        "missing-ca": f'ca_file = "{root / "nowhere.pem"}"\n',
    }
    return write_manifests(root, common, manifests)


@pytest.fixture
def features(
    serve: Callable[..., RunningServer], settings: Settings, tls_torchserve: TlsServer,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[features_pb2_grpc.FeatureServiceStub]:
    """A features service whose model directory holds the manifests; the token in its environment."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv("LABSIGHT_TEST_UNSET_TOKEN", raising=False)
    yield from serve_features(serve, settings, _manifests(tmp_path / "models", tls_torchserve))


def test_a_remote_model_over_mutual_tls_with_a_token_answers_as_in_plaintext(
    features: features_pb2_grpc.FeatureServiceStub, tls_torchserve: TlsServer
) -> None:
    embedding, score = _expected()
    np.testing.assert_allclose(_extract(features, "secured"), embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_extract(features, "named", "score"), score, rtol=1e-5, atol=1e-4)
    assert tls_torchserve.seen and set(tls_torchserve.seen) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("model", "code", "words"), [
    ("no-token", grpc.StatusCode.FAILED_PRECONDITION, "answered UNAUTHENTICATED: Token Authorization failed"),
    ("no-client-cert", grpc.StatusCode.UNAVAILABLE, "cannot be reached"),
    ("plaintext", grpc.StatusCode.UNAVAILABLE, "cannot be reached"),
    ("unset-token", grpc.StatusCode.FAILED_PRECONDITION,
     "remote.token_env: $LABSIGHT_TEST_UNSET_TOKEN is not set"),
    ("missing-ca", grpc.StatusCode.FAILED_PRECONDITION, "remote.ca_file"),
])
def test_a_missing_certificate_token_or_file_is_refused_naming_the_model(
    features: features_pb2_grpc.FeatureServiceStub, tls_torchserve: TlsServer,
    model: str, code: grpc.StatusCode, words: str,
) -> None:
    error = _error(features, model)
    assert error.code() == code, error.details()
    assert f"model {model!r}" in (error.details() or "") and words in (error.details() or "")
    # the service, and the secured model, still answer after the refusal
    np.testing.assert_allclose(_extract(features, "secured"), _expected()[0], rtol=1e-5, atol=1e-4)
