"""Redis clients of the gateway and workers: a pool sized to the threads that share it."""

from __future__ import annotations

from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

POOL_SLACK = 8
"""Connections beyond one per handler thread: the pub/sub reader, worker heartbeats, scripts."""
POOL_WAIT_S = 20.0
"""How long a call waits for a free pooled connection before it fails (UNAVAILABLE)."""
CONNECT_TIMEOUT_S = 5.0
"""A Redis that does not accept a connection this fast counts as down."""


def connect_redis(url: str, threads: int) -> redis.Redis:
    """A client of ``url`` whose pool serves ``threads`` concurrent callers.

    redis-py's default pool refuses the 101st concurrent connection with
    "Too many connections"; this pool holds one connection per thread plus
    POOL_SLACK and makes a caller beyond that wait for a free one instead.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=threads + POOL_SLACK,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
    )
    return redis.Redis(connection_pool=pool)


def redis_probe(url: str, timeout_s: float = 1.0) -> Callable[[], bool]:
    """A readiness check: True while the Redis at ``url`` answers PING within ``timeout_s``.

    It has a connection of its own and does not retry, so it answers within
    ``timeout_s`` even when every pooled connection is busy or Redis is gone.
    """
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return answers
