"""docker-compose.yml: valid per the Compose specification and faithful to labsight/catalog.py."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import check_jsonschema
import jsonschema
import pytest
import yaml

from labsight.catalog import ALL_PROCESSES, GATEWAY, MODEL_SERVICES, SERVERS, WORKER
from labsight.config import address_env_var
from labsight.runtime.cpus import PROCESS_MALLOC
from labsight.web import DEFAULT_WEB_PORT, WEB_PORT_ENV
from services.gateway.services import ServiceClients
from tests.deploy.deploy_support import REPO, tool

CPU_OVERRIDE = REPO / "deploy" / "docker" / "compose.cpu.yml"


def test_compose_file_validates_against_the_compose_spec() -> None:
    command = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*command, str(REPO / "docker-compose.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


class _ComposeTagLoader(yaml.SafeLoader):
    """Reads Compose's !reset / !override merge tags as the plain values they carry."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeTagLoader.add_constructor(_tag, _untagged)


def test_cpu_override_validates_and_drops_the_gpu_reservations() -> None:
    # check-jsonschema's YAML parser rejects Compose's merge tags, so this file is
    # checked with the same vendored schema after reading the tags as plain values.
    schema_file = Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    override = yaml.load(CPU_OVERRIDE.read_text(), Loader=_ComposeTagLoader)
    jsonschema.validate(override, json.loads(schema_file.read_text()))
    text = CPU_OVERRIDE.read_text()
    assert "deploy: !reset {}" in text and "build: !override" in text
    for spec in MODEL_SERVICES:
        service = override["services"][spec.name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert "-cuda" not in service["image"]


def test_every_process_runs_its_catalog_module_and_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*ALL_PROCESSES, "redis", "minio", "minio-init"}
    for spec in ALL_PROCESSES.values():
        service = services[spec.name]
        assert service["command"] == ["python", "-m", spec.module]
        assert service["healthcheck"]["test"] == ["CMD", "labsight-healthcheck", spec.name]
        assert service["environment"]["LABSIGHT_HOST"] == "0.0.0.0"
        # Ports come from the catalog inside the process; compose must not move them.
        assert not {"LABSIGHT_PORT", "LABSIGHT_METRICS_PORT"} & set(service["environment"])


def test_workers_reach_each_model_service_on_its_catalog_port(compose: dict[str, Any]) -> None:
    environment = compose["services"][WORKER.name]["environment"]
    for spec in MODEL_SERVICES:
        assert environment[address_env_var(spec.name)] == f"{spec.name}:{spec.grpc_port}"
    redis_url = urlsplit(_interpolated(environment["REDIS_URL"], SECRETS))
    assert (redis_url.hostname, redis_url.port, redis_url.path) == ("redis", 6379, "/0")


def test_each_process_gets_the_allocator_settings_labsight_up_gives_it(compose: dict[str, Any]) -> None:
    """The gateway and the workers reuse job buffers from the heap, the model services their
    request buffers and temporaries (PROCESS_MALLOC)."""
    for spec in ALL_PROCESSES.values():
        environment = compose["services"][spec.name]["environment"]
        malloc = {name: value for name, value in environment.items() if name.startswith("MALLOC_")}
        assert malloc == PROCESS_MALLOC.get(spec.name, {}), spec.name


SECRETS = {"LABSIGHT_REDIS_PASSWORD": "0123abcd", "LABSIGHT_SERVICE_TOKEN": "4567ef"}
"""What an operator's .env holds (see the top of docker-compose.yml)."""


def _interpolated(value: str, environment: dict[str, str]) -> str:
    """``value`` with Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` resolved
    from ``environment``; KeyError, as Compose refuses to start, for a missing ``:?`` one."""

    def resolve(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if environment.get(name):
            return environment[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return re.sub(r"\$\{(\w+)(?::([?-])([^}]*))?\}", resolve, value)


def test_only_the_gateway_publishes_its_grpc_and_web_page_ports(compose: dict[str, Any]) -> None:
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert [name for name, ports in published.items() if ports] == [GATEWAY.name]
    grpc, web = published[GATEWAY.name]
    assert grpc.rsplit(":", 1)[1] == str(GATEWAY.grpc_port)
    # The page listens where LABSIGHT_WEB_PORT says, and that container port is published.
    container_port = int(compose["services"][GATEWAY.name]["environment"][WEB_PORT_ENV])
    assert container_port == DEFAULT_WEB_PORT
    assert web.rsplit(":", 1)[1] == str(container_port)
    assert _interpolated(web, {}) == f"{DEFAULT_WEB_PORT}:{DEFAULT_WEB_PORT}"
    assert _interpolated(web, {"LABSIGHT_WEB_HOST_PORT": "8080"}) == f"8080:{DEFAULT_WEB_PORT}"


def test_model_services_reserve_a_gpu_and_run_the_cuda_image(compose: dict[str, Any]) -> None:
    for spec in MODEL_SERVICES:
        service = compose["services"][spec.name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert service["image"].endswith("-cuda")
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
        assert service["build"]["additional_contexts"]["labsight-cpu"] == "service:gateway"
    for name in (GATEWAY.name, WORKER.name):
        assert compose["services"][name]["build"]["dockerfile"] == "deploy/docker/Dockerfile"


def _redis_arguments(redis: dict[str, Any]) -> list[str]:
    """What the Redis container's start script passes to redis-server."""
    shell, flag, script = redis["command"]
    assert (shell, flag) == ("sh", "-c")
    return shlex.split(script.split("exec redis-server", 1)[1])


def test_redis_persists_with_aof_on_a_volume_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = _redis_arguments(redis)
    assert redis["image"].startswith("redis:7.")
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--auto-aof-rewrite-min-size") + 1] == "512mb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]


def test_gateway_reads_tokens_from_the_secret(compose: dict[str, Any]) -> None:
    gateway = compose["services"][GATEWAY.name]
    assert gateway["secrets"] == ["labsight-tokens"]
    assert gateway["environment"]["LABSIGHT_TOKENS_FILE"] == "/run/secrets/labsight-tokens"
    assert "labsight-tokens" in compose["secrets"]
    assert not any("secrets" in compose["services"][name] for name in ALL_PROCESSES if name != "gateway")


def _seconds(duration: str) -> int:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


def test_stop_grace_outlasts_the_work_in_hand(compose: dict[str, Any]) -> None:
    services = compose["services"]
    longest_model_call = inspect.signature(ServiceClients).parameters["call_timeout_s"].default
    assert _seconds(services[WORKER.name]["stop_grace_period"]) > longest_model_call
    for name in SERVERS:
        grace = int(services[name]["environment"]["LABSIGHT_SHUTDOWN_GRACE_S"])
        assert _seconds(services[name]["stop_grace_period"]) > grace


def test_every_service_restarts_and_waits_for_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # A one-shot service must not restart: "unless-stopped" reruns it after it exits 0.
    assert services["minio-init"]["restart"] == "no"
    assert all(s["restart"] == "unless-stopped" for name, s in services.items() if name != "minio-init")
    assert services[WORKER.name]["deploy"]["replicas"] not in (0, 1, "0", "1")
    needs = {name: need["condition"] for name, need in services[WORKER.name]["depends_on"].items()}
    assert needs == {
        "redis": "service_healthy",
        "minio-init": "service_completed_successfully",
        **{spec.name: "service_healthy" for spec in MODEL_SERVICES},
    }
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}


def test_redis_requires_a_password_that_its_clients_send(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):  # REDISCLI_AUTH: for the health check
        assert _interpolated(redis["environment"][name], SECRETS) == SECRETS["LABSIGHT_REDIS_PASSWORD"]
        with pytest.raises(KeyError, match="LABSIGHT_REDIS_PASSWORD"):
            _interpolated(redis["environment"][name], {})
    script = redis["command"][-1]
    assert "requirepass" in script and "$$REDIS_PASSWORD" in script  # $$: the shell's, not compose's
    arguments = _redis_arguments(redis)
    assert arguments[:2] == ["--include", "/run/redis/auth.conf"] and "/run/redis" in redis["tmpfs"]
    assert not any("PASSWORD" in argument for argument in arguments)  # never on the command line
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    for name in (GATEWAY.name, WORKER.name):
        redis_url = _interpolated(compose["services"][name]["environment"]["REDIS_URL"], SECRETS)
        assert urlsplit(redis_url).password == SECRETS["LABSIGHT_REDIS_PASSWORD"]
        with pytest.raises(KeyError, match="LABSIGHT_REDIS_PASSWORD"):
            _interpolated(compose["services"][name]["environment"]["REDIS_URL"], {})


def test_workers_gateway_and_model_services_share_the_service_token(compose: dict[str, Any]) -> None:
    for spec in (GATEWAY, WORKER, *MODEL_SERVICES):
        token = compose["services"][spec.name]["environment"]["LABSIGHT_SERVICE_TOKEN"]
        assert _interpolated(token, SECRETS) == SECRETS["LABSIGHT_SERVICE_TOKEN"]
        assert _interpolated(token, {}) == ""  # optional: unset, no token is checked


BUCKET_POLICY = REPO / "deploy" / "s3" / "labsight-blobs-policy.json"
S3_SECRETS = {"LABSIGHT_MINIO_ROOT_PASSWORD": "root-secret-0123", "LABSIGHT_S3_SECRET_KEY": "app-secret-4567"}
"""What an operator's .env adds for MinIO (see the top of docker-compose.yml)."""
BLOB_SETTINGS = ("LABSIGHT_BLOB_URL", "LABSIGHT_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _blob_url(compose: dict[str, Any]) -> tuple[str, str]:
    """(bucket, prefix) of the gateway's LABSIGHT_BLOB_URL."""
    url = urlsplit(compose["services"][GATEWAY.name]["environment"]["LABSIGHT_BLOB_URL"])
    assert url.scheme == "s3"
    return url.netloc, url.path.strip("/")


def test_every_labsight_process_shares_the_blob_store_once_its_bucket_exists(
    compose: dict[str, Any],
) -> None:
    # The model services read references too (the features service decodes fractal
    # images from the store), so every process needs the same store and credentials.
    services = compose["services"]
    minio = services["minio"]
    settings = {
        name: _interpolated(services[GATEWAY.name]["environment"][name], S3_SECRETS) for name in BLOB_SETTINGS
    }
    endpoint = urlsplit(settings["LABSIGHT_S3_ENDPOINT"])
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "minio", 9000)
    assert minio["command"] == ["server", "/data"]
    assert settings["AWS_SECRET_ACCESS_KEY"] == S3_SECRETS["LABSIGHT_S3_SECRET_KEY"]
    for spec in ALL_PROCESSES.values():
        environment = services[spec.name]["environment"]
        assert {name: _interpolated(environment[name], S3_SECRETS) for name in settings} == settings
        assert services[spec.name]["depends_on"]["minio-init"] == {
            "condition": "service_completed_successfully"
        }
    assert "minio" not in services["redis"].get("depends_on", {})


def test_minio_keeps_blobs_on_a_volume_is_healthchecked_and_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio = services["minio"]
    assert "minio-data:/data" in minio["volumes"] and "minio-data" in compose["volumes"]
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    for name in ("minio", "minio-init"):
        image, tag = services[name]["image"].split(":", 1)
        assert image in ("minio/minio", "minio/mc") and tag.startswith("RELEASE.")  # never :latest
        assert "ports" not in services[name]
    root = {name: _interpolated(minio["environment"][name], S3_SECRETS)
            for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")}
    assert root["MINIO_ROOT_PASSWORD"] == S3_SECRETS["LABSIGHT_MINIO_ROOT_PASSWORD"]
    app = _interpolated(services[GATEWAY.name]["environment"]["AWS_ACCESS_KEY_ID"], {})
    defaults = {name: _interpolated(minio["environment"][name], {}) for name in root}
    # The dev defaults start (MinIO: keys of 3-20, secrets of 8-40 characters); the
    # LabSight key is not the root user.
    assert 3 <= len(defaults["MINIO_ROOT_USER"]) <= 20 and 8 <= len(defaults["MINIO_ROOT_PASSWORD"]) <= 40
    assert 3 <= len(app) <= 20 and app != defaults["MINIO_ROOT_USER"]
    secret = _interpolated(services[GATEWAY.name]["environment"]["AWS_SECRET_ACCESS_KEY"], {})
    assert 8 <= len(secret) <= 40 and "dev-only" in secret


def test_bucket_init_creates_the_blob_urls_bucket_and_a_key_scoped_to_its_prefix(
    compose: dict[str, Any],
) -> None:
    init = compose["services"]["minio-init"]
    bucket, prefix = _blob_url(compose)
    (script,) = init["command"]
    assert init["entrypoint"] == ["/bin/sh", "-c"] and script.startswith("set -e;")
    assert f"mc mb --ignore-existing store/{bucket};" in script
    assert "$$S3_ACCESS_KEY" in script and "$$MINIO_ROOT_PASSWORD" in script  # the shell's
    (mount,) = init["volumes"]
    source, target, mode = mount.split(":")
    assert (REPO / source).resolve() == BUCKET_POLICY and mode == "ro"
    assert f"mc admin policy create store labsight-blobs {target};" in script
    gateway = compose["services"][GATEWAY.name]["environment"]
    for ours, theirs in (("S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"), ("S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")):
        assert init["environment"][ours] == gateway[theirs]
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert init["environment"][name] == compose["services"]["minio"]["environment"][name]
    statements = json.loads(BUCKET_POLICY.read_text())["Statement"]
    resources = {resource for statement in statements for resource in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}/*"}
    actions = {action for statement in statements for action in statement["Action"]}
    # What labsight/blobs.py calls: put (multipart too), ranged get, head (404 needs
    # ListBucket), delete; nothing that touches the bucket itself.
    assert {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert not any(action.endswith("*") or action.startswith(("s3:CreateBucket", "s3:DeleteBucket",
                                                              "s3:PutBucket")) for action in actions)


def _run_bucket_init(
    compose: dict[str, Any], tmp_path: Path, attach_rc: int, attached: str
) -> tuple[int, list[str]]:
    """Run minio-init's script under sh with a stub ``mc`` that logs its calls; ``attach_rc``:
    what ``mc admin policy attach`` returns, ``attached``: the policy ``mc admin user info`` shows."""
    init = compose["services"]["minio-init"]
    (script,) = init["command"]
    stub = tmp_path / "mc"
    stub.write_text(
        '#!/bin/sh\necho "$*" >> "$MC_LOG"\n'
        'case "$*" in\n'
        '  "admin policy attach"*) exit "$ATTACH_RC" ;;\n'
        '  "admin user info"*) echo "PolicyName: $ATTACHED" ;;\n'
        "esac\n"
    )
    stub.chmod(0o755)
    log = tmp_path / "calls"
    environment = {
        "PATH": f"{tmp_path}:/usr/bin:/bin", "MC_LOG": str(log), "ATTACH_RC": str(attach_rc),
        "ATTACHED": attached,
        **{name: _interpolated(value, S3_SECRETS) for name, value in init["environment"].items()},
    }
    # Compose turns $$ into $ before the shell sees the script.
    result = subprocess.run(["/bin/sh", "-c", script.replace("$$", "$")], env=environment)
    return result.returncode, log.read_text().splitlines()


def test_bucket_init_runs_its_steps_with_the_env_credentials_and_may_run_again(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    code, calls = _run_bucket_init(compose, tmp_path, attach_rc=0, attached="")
    assert code == 0
    root_password = S3_SECRETS["LABSIGHT_MINIO_ROOT_PASSWORD"]
    assert calls[0] == f"alias set store http://minio:9000 labsight-admin {root_password}"
    assert calls[1] == "mb --ignore-existing store/labsight-blobs"
    assert f"admin user add store labsight-app {S3_SECRETS['LABSIGHT_S3_SECRET_KEY']}" in calls
    assert calls[-1] == "admin policy attach store labsight-blobs --user labsight-app"
    # A second `up`: MinIO refuses to attach the policy again, and the key already has it.
    (tmp_path / "calls").unlink()
    assert _run_bucket_init(compose, tmp_path, attach_rc=1, attached="labsight-blobs")[0] == 0
    # A real failure (the key lacks the policy) stops the stack from starting.
    (tmp_path / "calls").unlink()
    assert _run_bucket_init(compose, tmp_path, attach_rc=1, attached="")[0] != 0
