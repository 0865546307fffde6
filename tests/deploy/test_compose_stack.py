"""The compose stack for real: build the images, start it, run jobs through the gateway
with their inputs in the MinIO blob store.

Runs only where a Docker engine answers (through the ``docker`` SDK) and the
``docker compose`` plugin exists; elsewhere it is skipped with the reason. Hosts
without the NVIDIA runtime run the model services on the CPU image
(deploy/docker/compose.cpu.yml).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from labsight.client import LabSightClient
from labsight.demo import demo_image
from labsight.v1 import gateway_pb2 as pb
from services.gateway.auth import create_token
from tests.deploy.deploy_support import REPO

docker = pytest.importorskip("docker", reason="the docker SDK is not installed")

pytestmark = pytest.mark.timeout(1800)


@dataclass
class Stack:
    gateway: str
    token: str
    web: str


def _engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine reachable: {error}")
    if shutil.which("docker") is None or subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode:
        pytest.skip("a Docker engine answers but the `docker compose` plugin is missing")
    return client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = _engine()
    tokens = tmp_path_factory.mktemp("compose") / "tokens"
    token = create_token(tokens, "compose-test")
    project = f"labsight-test-{uuid.uuid4().hex[:8]}"
    port, web_port = _free_port(), _free_port()
    files = ["-f", str(REPO / "docker-compose.yml")]
    if "nvidia" not in client.info().get("Runtimes", {}):
        files += ["-f", str(REPO / "deploy" / "docker" / "compose.cpu.yml")]
    compose = ["docker", "compose", "--project-name", project, *files]
    environment = {
        **os.environ,
        "LABSIGHT_TAG": project,
        "LABSIGHT_TOKENS_PATH": str(tokens),
        "LABSIGHT_UID": str(os.getuid()),
        "LABSIGHT_GID": str(os.getgid()),
        "LABSIGHT_GATEWAY_PORT": str(port),
        "LABSIGHT_WEB_HOST_PORT": str(web_port),
        "LABSIGHT_WORKERS": "1",
        "LABSIGHT_REDIS_PASSWORD": secrets.token_hex(16),
        "LABSIGHT_SERVICE_TOKEN": secrets.token_hex(16),
        "LABSIGHT_MINIO_ROOT_PASSWORD": secrets.token_hex(20),  # MinIO: 8 to 40 characters
        "LABSIGHT_S3_SECRET_KEY": secrets.token_hex(20),
        # Every image goes through MinIO, so the jobs below read their input by reference
        # (fractal in the features service, deep-features through the worker).
        "LABSIGHT_BLOB_THRESHOLD_BYTES": "1024",
    }
    try:
        subprocess.run([*compose, "up", "--detach", "--build", "--wait", "--wait-timeout", "900"],
                       env=environment, check=True, cwd=REPO)
        yield Stack(f"127.0.0.1:{port}", token, f"http://127.0.0.1:{web_port}")
    finally:
        subprocess.run([*compose, "logs", "--no-color", "--tail", "50"], env=environment, cwd=REPO)
        subprocess.run([*compose, "down", "--volumes", "--remove-orphans"], env=environment, cwd=REPO)
        for image in client.images.list(name="labsight"):
            if any(project in tag for tag in image.tags):
                client.images.remove(image.id, force=True)


def _run(stack: Stack, pipeline: str) -> pb.JobResult:
    with LabSightClient(stack.gateway, token=stack.token) as client:
        job = client.submit(pipeline, demo_image(), {})
        job = client.wait(job.job_id, timeout_s=600)
        assert job.status == pb.JOB_STATUS_DONE, job.error
        return client.result(job.job_id)


def test_fractal_job_runs_through_the_compose_stack(stack: Stack) -> None:
    result = _run(stack, "fractal")
    assert result.ByteSize() > 0


def test_deep_features_job_runs_through_the_compose_stack(stack: Stack) -> None:
    try:
        result = _run(stack, "deep-features")
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip(f"the gateway does not serve deep-features yet: {error.details()}")
        raise
    assert result.ByteSize() > 0


def test_the_web_page_answers_on_its_published_port(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.web}/", timeout=30) as page:
        assert page.status == 200 and b"LabSight" in page.read()
    request = urllib.request.Request(f"{stack.web}/api/pipelines",
                                     headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert "fractal" in {pipeline["name"] for pipeline in json.load(answer)}
