"""Runtime settings of a LabSight process, read from LABSIGHT_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from labsight.catalog import MODEL_SERVICES, ProcessSpec

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MESSAGE_RESERVE_BYTES = 1024 * 1024
"""Room of a message kept for its tables and small fields when its large arrays (masks,
probability matrices) are sized against the message limit."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000

T = TypeVar("T")


def answer_room() -> int:
    """Bytes of large arrays an answer or a result may carry: the message limit
    (LABSIGHT_MAX_MESSAGE_BYTES) less MESSAGE_RESERVE_BYTES for the rest of it."""
    return env_int("LABSIGHT_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES) - MESSAGE_RESERVE_BYTES


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or empty)."""
    return _env_parsed(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty)."""
    return _env_parsed(name, default, float, "a number")


def _env_parsed(name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be {expected}, got {raw!r}") from None


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to 1, true, yes or on (any case)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def address_env_var(service_name: str) -> str:
    """Environment variable that holds a model service's address, e.g. LABSIGHT_FEATURES_ADDR."""
    return f"LABSIGHT_{service_name.upper()}_ADDR"


@dataclass
class Settings:
    """Everything a service or worker needs to start; see README "Configuration"."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 16
    shutdown_grace_s: float = 10.0
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = "labsight"
    service_addresses: dict[str, str] = field(default_factory=dict)
    max_queue_depth: int = 100_000
    max_attempts: int = 5
    claim_idle_ms: int = 30_000
    result_ttl_s: int = 7 * 24 * 3600
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    service_wait_s: float = 180.0
    log_level: str = "INFO"
    tokens_file: str = ""
    tokens_env: str = ""
    allow_anonymous: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    service_token: str = ""

    @classmethod
    def from_env(cls, spec: ProcessSpec | None = None) -> Settings:
        """Settings for ``spec`` from the environment, with the catalog's ports as defaults."""
        default_port = spec.grpc_port or 0 if spec else 0
        default_metrics = spec.metrics_port if spec else None
        metrics_port = env_int("LABSIGHT_METRICS_PORT", default_metrics or -1)
        addresses = {
            svc.name: os.environ.get(address_env_var(svc.name), f"127.0.0.1:{svc.grpc_port}")
            for svc in MODEL_SERVICES
        }
        return cls(
            host=os.environ.get("LABSIGHT_HOST", "127.0.0.1"),
            port=env_int("LABSIGHT_PORT", default_port),
            metrics_port=None if metrics_port < 0 else metrics_port,
            max_message_bytes=env_int("LABSIGHT_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
            max_workers=env_int("LABSIGHT_GRPC_THREADS", spec.grpc_threads if spec else 16),
            shutdown_grace_s=float(os.environ.get("LABSIGHT_SHUTDOWN_GRACE_S", "10")),
            redis_url=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            key_prefix=os.environ.get("LABSIGHT_KEY_PREFIX", "labsight"),
            service_addresses=addresses,
            max_queue_depth=env_int("LABSIGHT_MAX_QUEUE_DEPTH", 100_000),
            max_attempts=env_int("LABSIGHT_MAX_ATTEMPTS", 5),
            claim_idle_ms=env_int("LABSIGHT_CLAIM_IDLE_MS", 30_000),
            result_ttl_s=env_int("LABSIGHT_RESULT_TTL_S", 7 * 24 * 3600),
            retry_base_s=float(os.environ.get("LABSIGHT_RETRY_BASE_S", "1")),
            retry_max_s=float(os.environ.get("LABSIGHT_RETRY_MAX_S", "60")),
            service_wait_s=env_float("LABSIGHT_SERVICE_WAIT_S", 180.0),
            log_level=os.environ.get("LABSIGHT_LOG_LEVEL", "INFO"),
            tokens_file=os.environ.get("LABSIGHT_TOKENS_FILE", ""),
            tokens_env=os.environ.get("LABSIGHT_TOKENS", ""),
            allow_anonymous=env_flag("LABSIGHT_ALLOW_ANONYMOUS"),
            tls_cert=os.environ.get("LABSIGHT_TLS_CERT", ""),
            tls_key=os.environ.get("LABSIGHT_TLS_KEY", ""),
            service_token=os.environ.get("LABSIGHT_SERVICE_TOKEN", ""),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """Channel/server options that apply the message size limit both ways."""
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        """Server options: the size limit, and connections recycled every few minutes so
        clients re-resolve and spread over new replicas after a scale-out."""
        return [*self.grpc_options(), ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS)]
