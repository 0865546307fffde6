"""`labsight up` as a user runs it: real processes, its own Redis with AOF, the CLI next to it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from labsight.catalog import SERVERS
from labsight.demo import demo_image
from labsight.home import read_endpoints
from labsight.images import encode_png
from labsight.redis_server import port_is_free
from labsight.runtime.cpus import size_stack
from labsight.v1 import features_pb2, features_pb2_grpc
from labsight.web import WEB_PORT_ENV
from services.features.fractal import gliding_box
from services.gateway.keys import RedisKeys
from tests.up_support import UpProcess, free_base_port, start_up, stop_up, up_environment


def _cli(up: UpProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labsight.cli", *args],
        env=up.env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """`labsight up` with its own Redis (no REDIS_URL), in a temporary LABSIGHT_HOME."""
    home = tmp_path_factory.mktemp("labsight-home")
    output = tmp_path_factory.mktemp("up-output") / "up.out"
    handle = start_up(home, free_base_port(), up_environment(home), output)
    yield handle
    stop_up(handle.process)


def test_every_service_reports_serving_and_lists_itself_by_reflection(up: UpProcess) -> None:
    addresses = {"gateway": up.endpoints.gateway, **up.endpoints.services}
    assert set(addresses) == set(SERVERS)
    for name, address in addresses.items():
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", *SERVERS[name].grpc_services):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, service)
            listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert set(SERVERS[name].grpc_services) <= listed


def test_every_process_answers_metrics(up: UpProcess) -> None:
    replicas = {f"{name}-{index}" for name, count in size_stack().replicas.items()
                for index in range(2, count + 1)}
    assert set(up.endpoints.metrics) == {*SERVERS, *replicas, "worker", "up"}
    for name, url in up.endpoints.metrics.items():
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "process_cpu_seconds_total" in body, name
    up_metrics = urllib.request.urlopen(up.endpoints.metrics["up"], timeout=5).read().decode()
    assert "labsight_up_healthy 1.0" in up_metrics
    for child in ("redis", *SERVERS, "worker-1"):
        assert f'labsight_up_child_up{{child="{child}"}} 1.0' in up_metrics, child


def _child_environments(parent: int) -> dict[str, dict[str, str]]:
    """The environment of each child of process ``parent`` by the module it runs (``-m``)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # ended meanwhile
        if b"-m" in argv:
            module = argv[argv.index(b"-m") + 1].decode()
            found[module] = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    return found


def test_each_process_gets_the_allocator_settings_of_its_work(up: UpProcess) -> None:
    """The gateway and the workers reuse job buffers of up to 32 MiB from the heap, the model
    services their request buffers and temporaries of up to 8 MiB (labsight.runtime.cpus).
    Every process keeps 2 arenas."""
    environments = _child_environments(up.process.pid)
    thresholds = {"services.gateway": "33554432", "services.gateway.worker": "33554432",
                  "services.segmentation": "8388608", "services.features": "8388608",
                  "services.classifier": "8388608"}
    assert set(thresholds) <= set(environments)
    for module, env in environments.items():
        assert env.get("MALLOC_ARENA_MAX") == "2", module
        assert env.get("MALLOC_MMAP_THRESHOLD_") == thresholds[module], module


def test_cli_fractal_job_equals_a_direct_call_on_the_same_pixels(
    up: UpProcess, tmp_path: Path
) -> None:
    image = demo_image()
    path = tmp_path / "demo.png"
    path.write_bytes(encode_png(image))
    run = _cli(up, "submit", "fractal", str(path), "--param", "percolation=true", "--wait", "--json")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 1
    job = lines[0]
    assert job["status"] == "done" and job["input_name"] == "demo.png"
    direct = gliding_box(image)
    assert job["result"]["tensors"]["lacunarity"] == direct.lacunarity.tolist()
    assert job["result"]["tensors"]["box_count"] == direct.box_count.tolist()
    row = job["result"]["tables"]["fractal"][0]
    assert row["MinkLAC1"] == direct.lacunarity[0] and "Minkp1" in row

    status = _cli(up, "status", job["job_id"], "--json")
    assert json.loads(status.stdout)["status"] == "done"
    csv_text = _cli(up, "results", job["job_id"], "--format", "csv").stdout
    header, values = csv_text.splitlines()[:2]
    assert header.startswith("id,MinkLAC1,MinkLAC2") and values.startswith("demo.png,")
    plot = _cli(up, "plot", job["job_id"], "-o", str(tmp_path / "fractal.png"))
    assert plot.returncode == 0, plot.stderr
    assert "curves plot of 1 result written to" in plot.stderr
    assert (tmp_path / "fractal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_batch_of_images_exports_one_table(up: UpProcess, tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        path = tmp_path / f"well-{index}.png"
        path.write_bytes(encode_png(np.roll(demo_image(), index, axis=0)))
        paths.append(str(path))
    run = _cli(up, "submit", "fractal", *paths, "--param", "box_sizes=3-9", "--batch", "plate-1",
               "--label", "class=1", "--wait", "--json")
    assert run.returncode == 0, run.stderr
    assert "batch plate-1: 3 jobs" in run.stderr
    assert [json.loads(line)["status"] for line in run.stdout.splitlines()] == ["done"] * 3
    arff = _cli(up, "results", "--batch", "plate-1", "--format", "arff").stdout
    assert "@ATTRIBUTE MinkLAC1 numeric" in arff
    assert len(arff.split("@DATA", 1)[1].strip().splitlines()) == 3
    weka = _cli(up, "results", "--batch", "plate-1", "--format", "arff", "--table", "weka_fractal",
                "--class-label", "class").stdout
    attributes = [line.split()[1] for line in weka.splitlines() if line.startswith("@ATTRIBUTE")]
    assert attributes == [
        *(f"MinkLAC{i}" for i in range(1, 5)), *(f"MinkDF{i}" for i in range(1, 5)),
        "MinkAreaLAC", "MinkSkewnessLAC", "MinkAreaRatioLAC", "MinkMaxLAC", "class",
    ]
    assert "@ATTRIBUTE class {1}" in weka
    assert all(line.endswith(",1") for line in weka.split("@DATA", 1)[1].strip().splitlines())
    parquet = tmp_path / "plate.parquet"
    assert _cli(up, "results", "--batch", "plate-1", "--format", "parquet", "-o",
                str(parquet)).returncode == 0
    import pandas as pd

    frame = pd.read_parquet(parquet)
    assert sorted(frame["id"]) == ["well-0.png", "well-1.png", "well-2.png"]
    assert frame.loc[frame["id"] == "well-0.png", "MinkLAC1"].item() == gliding_box(
        demo_image(), box_sizes=[3, 5, 7, 9]
    ).lacunarity[0]


def test_cli_reports_bad_input_and_unknown_jobs(up: UpProcess, tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    run = _cli(up, "submit", "fractal", str(corrupt))
    assert run.returncode == 2
    assert "INVALID_ARGUMENT" in run.stderr and "corrupt PNG" in run.stderr
    unknown = _cli(up, "status", "0123abcd")
    assert unknown.returncode == 2 and "NOT_FOUND" in unknown.stderr
    pipeline = _cli(up, "submit", "no-such", str(corrupt))
    assert pipeline.returncode == 2 and "unknown pipeline 'no-such'" in pipeline.stderr


def test_worker_started_by_hand_joins_the_same_queue(up: UpProcess) -> None:
    env = {**up.env, "LABSIGHT_METRICS_PORT": "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "labsight.cli", "worker"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis.from_url(up.endpoints.redis_url)
        workers_key = RedisKeys(up.endpoints.key_prefix).workers()
        deadline = time.monotonic() + 60
        while client.hlen(workers_key) < 2:
            assert time.monotonic() < deadline, "the hand-started worker never joined the group"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


def test_redis_of_up_keeps_an_append_only_file(up: UpProcess) -> None:
    client = redis.Redis.from_url(up.endpoints.redis_url)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    rewrite = client.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"]
    assert int(rewrite) == 512 * 1024 * 1024  # a queue's AOF grows by every input: rewrite rarely
    assert any((up.home / "redis").rglob("*.aof"))


def _anonymous_mappings_mib(pid: int) -> list[int]:
    """Sizes (MiB) of process ``pid``'s writable anonymous memory mappings, its brk heap left
    out (and address space malloc arenas only reserve)."""
    sizes = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[1].startswith("rw"):  # no path, not [heap] or [stack]
            start, end = (int(address, 16) for address in fields[0].split("-"))
            sizes.append((end - start) >> 20)
    return sizes


def test_redis_of_up_keeps_a_job_sized_input_on_its_heap(up: UpProcess) -> None:
    """A 12 MiB job input is stored in redis-server's heap, whose freed buffers the next job
    reuses, not in a mapping of its own, made, zeroed and faulted in per job and given back
    (glibc's defaults; labsight.redis_server.REDIS_MALLOC)."""
    client = redis.Redis.from_url(up.endpoints.redis_url)
    pid = int(client.info("server")["process_id"])
    key = "test:job-sized-input"
    client.set(key, b"\x01" * (12 << 20))
    try:
        assert max(_anonymous_mappings_mib(pid)) < 12
    finally:
        client.delete(key)


def test_local_mode_keeps_its_data_and_redis_private(up: UpProcess) -> None:
    url = up.endpoints.redis_url
    password = (up.home / "redis-password").read_text().strip()
    assert url.startswith(f"redis://:{password}@127.0.0.1:") and len(password) >= 32
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url.replace(f":{password}@", "")).ping()
    assert up.home.stat().st_mode & 0o777 == 0o700
    for path in [up.home / "redis", *(up.home / "redis").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    for name in ("redis-password", "local-token", "service-token", "endpoints.json"):
        assert (up.home / name).stat().st_mode & 0o777 == 0o600, name
    command_lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "redis-server" in command_lines and password not in command_lines
    assert password not in up.output_text()
    for log in (up.home / "logs").iterdir():
        assert password not in log.read_text(errors="replace"), log


def test_model_services_answer_only_callers_with_the_service_token(up: UpProcess) -> None:
    """Other local users reach the loopback ports too: the model services want up's service token."""
    token = (up.home / "service-token").read_text().strip()
    assert up.endpoints.service_token == token and len(token) >= 32
    assert (up.home / "service-token").stat().st_mode & 0o777 == 0o600
    assert up.endpoints.as_environment()["LABSIGHT_SERVICE_TOKEN"] == token  # hand-started workers
    with grpc.insecure_channel(up.endpoints.services["features"]) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListModels(features_pb2.ListModelsRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ListModels(features_pb2.ListModelsRequest(), timeout=30,
                                metadata=[("authorization", f"Bearer {token}")])
        assert reply.models


def test_second_up_on_the_same_home_is_refused_naming_the_pid(up: UpProcess) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(free_base_port())],
        env=up.env, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert f"another `labsight up` (pid {up.process.pid}) is running on {up.home}" in run.stderr
    assert read_endpoints(up.home) == up.endpoints  # the running stack's record is kept


def test_second_up_on_the_same_ports_says_so(up: UpProcess, tmp_path: Path) -> None:
    base = int(up.endpoints.gateway.rsplit(":", 1)[1])
    run = subprocess.run(
        [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(base)],
        env=up_environment(tmp_path / "other-home"), capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert f"ports [{base}" in run.stderr and "another `labsight up`" in run.stderr
    assert read_endpoints(up.home) == up.endpoints


def test_a_malformed_replicas_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = subprocess.run(
        [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(free_base_port())],
        env=up_environment(home, LABSIGHT_REPLICAS="classifier=zero"), capture_output=True,
        text=True, timeout=60,
    )
    assert run.returncode == 2
    assert "LABSIGHT_REPLICAS: 'classifier=zero' is not model-service=count" in run.stderr
    assert "Traceback" not in run.stderr
    assert read_endpoints(home) is None


def _up_with_the_web_port_taken(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`labsight up` in a fresh home while another socket holds its web page's port."""
    base = free_base_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env.get(WEB_PORT_ENV, base + 98))))
        holder.listen()
        web_port = holder.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(base)],
            env=up_environment(tmp_path / "home", **env), capture_output=True, text=True, timeout=60,
        )
    return run, web_port


def test_up_on_a_taken_web_port_says_which_and_what_moves_it(tmp_path: Path) -> None:
    run, web_port = _up_with_the_web_port_taken(tmp_path)
    assert run.returncode == 1
    assert f"the web page's port {web_port} is in use" in run.stderr
    assert f"{WEB_PORT_ENV}=PORT" in run.stderr and "--base-port" in run.stderr
    assert "all services SERVING" not in run.stdout  # refused before anything started


def test_up_on_a_taken_web_port_from_the_variable_names_the_variable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen = probe.getsockname()[1]
    run, web_port = _up_with_the_web_port_taken(tmp_path, **{WEB_PORT_ENV: str(chosen)})
    assert run.returncode == 1 and web_port == chosen
    assert f"the web page's port {chosen} is in use" in run.stderr and WEB_PORT_ENV in run.stderr
    assert "--base-port" not in run.stderr  # --base-port does not move a port the variable set


def test_sigterm_stops_everything_cleanly(up: UpProcess) -> None:
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=60) == 0
    assert read_endpoints(up.home) is None
    for target in [up.endpoints.gateway, *up.endpoints.services.values()]:
        for address in target.removeprefix("ipv4:").split(","):  # every process of a service
            port = int(address.rsplit(":", 1)[1])
            assert port_is_free(port), f"{address} still bound after stop"
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(up.endpoints.redis_url, socket_connect_timeout=1).ping()
