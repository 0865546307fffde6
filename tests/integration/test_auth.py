"""Bearer tokens map callers to tenants; tenants never see each other's jobs; TLS works."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labsight.catalog import GATEWAY
from labsight.client import LabSightClient
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from services.gateway.auth import create_token
from services.gateway.servicer import open_tenant, tenant_resolver
from services.gateway.servicer import register as register_gateway

Serve = Callable[..., RunningServer]


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, str, str]:
    """A tokens file with tenants lab-a and lab-b; returns (file, token A, token B)."""
    path = tmp_path / "tokens"
    return path, create_token(path, "lab-a"), create_token(path, "lab-b")


def _gateway(serve: Serve, settings: Settings, tokens_file: Path, **extra: str) -> RunningServer:
    secured = Settings(**{**vars(settings), "allow_anonymous": False,
                          "tokens_file": str(tokens_file), **extra})
    return serve(register_gateway, GATEWAY.grpc_services, secured)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def test_tokens_file_holds_only_hashes(tokens: tuple[Path, str, str]) -> None:
    path, token_a, token_b = tokens
    text = path.read_text()
    assert token_a not in text and token_b not in text
    assert text.count("sha256:") == 2
    assert path.stat().st_mode & 0o777 == 0o600


def test_missing_or_wrong_token_is_unauthenticated(
    serve: Serve, settings: Settings, tokens: tuple[Path, str, str]
) -> None:
    gateway = _gateway(serve, settings, tokens[0])
    with LabSightClient(gateway.address, token="") as anonymous:
        code, message = _code(lambda: anonymous.submit("fractal", demo_image()))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in message
        assert _code(anonymous.pipelines)[0] == grpc.StatusCode.UNAUTHENTICATED
    with LabSightClient(gateway.address, token="not-a-token") as wrong:
        assert _code(lambda: wrong.list_jobs()) == (
            grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"
        )


def test_other_tenants_jobs_are_not_found_for_every_rpc(
    serve: Serve, settings: Settings, tokens: tuple[Path, str, str]
) -> None:
    path, token_a, token_b = tokens
    gateway = _gateway(serve, settings, path)
    with LabSightClient(gateway.address, token=token_a) as lab_a, \
            LabSightClient(gateway.address, token=token_b) as lab_b:
        job = lab_a.submit("fractal", demo_image(), {"box_sizes": "3"})
        batch = lab_a.submit_batch([], batch_id="a-plate")
        assert lab_a.get(job.job_id).status == pb.JOB_STATUS_QUEUED
        for call in (
            lambda: lab_b.get(job.job_id),
            lambda: lab_b.result(job.job_id),
            lambda: lab_b.cancel(job.job_id),
            lambda: list(lab_b.watch(job.job_id)),
            lambda: lab_b.batch(batch.batch_id),
        ):
            code, message = _code(call)
            assert code == grpc.StatusCode.NOT_FOUND, message
        assert lab_b.list_jobs() == []
        assert [j.job_id for j in lab_a.list_jobs()] == [job.job_id]
        assert lab_a.get(job.job_id).status == pb.JOB_STATUS_QUEUED  # B's cancel did nothing


def test_tokens_added_to_the_file_work_without_restart(
    serve: Serve, settings: Settings, tokens: tuple[Path, str, str]
) -> None:
    path = tokens[0]
    gateway = _gateway(serve, settings, path)
    late = create_token(path, "lab-c")
    with LabSightClient(gateway.address, token=late) as lab_c:
        assert lab_c.list_jobs() == []


def test_gateway_refuses_to_start_without_tokens_unless_anonymous_is_allowed(
    settings: Settings,
) -> None:
    closed = Settings(**{**vars(settings), "allow_anonymous": False})
    with pytest.raises(ValueError, match="no tokens configured: set LABSIGHT_TOKENS_FILE"):
        tenant_resolver(closed)
    assert tenant_resolver(settings) is open_tenant


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


def test_tls_gateway_with_a_self_signed_certificate(
    serve: Serve, settings: Settings, tokens: tuple[Path, str, str], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    gateway = _gateway(serve, settings, tokens[0], tls_cert=str(cert), tls_key=str(key))
    with LabSightClient(gateway.address, token=tokens[1], tls_ca=cert) as secure:
        assert secure.list_jobs() == []
    with LabSightClient(gateway.address, token=tokens[1], timeout_s=3) as plaintext:
        assert _code(plaintext.list_jobs)[0] == grpc.StatusCode.UNAVAILABLE
