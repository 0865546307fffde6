"""Bearer-token authentication: each token maps to a tenant; only SHA-256 hashes are kept."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from pathlib import Path

import grpc

from labsight.errors import InvalidArgument, Unauthenticated
from services.gateway.ids import check_id

log = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"


def hash_token(token: str) -> str:
    """The stored form of a token: ``sha256:<hex digest>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def check_tenant(tenant: str, source: str) -> str:
    """``tenant`` if it is a valid tenant name (the id syntax: it becomes part of Redis keys);
    ValueError saying ``source`` otherwise."""
    try:
        return check_id("tenant", tenant)
    except InvalidArgument as error:
        raise ValueError(f"{source}: {error}") from None


def parse_token_lines(text: str, source: str) -> dict[str, str]:
    """Parse ``<tenant> sha256:<hex>`` lines (``#`` comments, blank lines ignored) into hash → tenant."""
    table: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith(HASH_PREFIX):
            raise ValueError(f"{source}:{number}: expected '<tenant> sha256:<hex>', got {raw!r}")
        tenant, digest = parts
        table[digest] = check_tenant(tenant, f"{source}:{number}")
    return table


def parse_token_env(value: str) -> dict[str, str]:
    """Parse LABSIGHT_TOKENS (``tenant=token,tenant2=token2``) into hash → tenant."""
    table: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        tenant, sep, token = item.partition("=")
        if not sep or not tenant or not token:
            raise ValueError("LABSIGHT_TOKENS: expected tenant=token pairs separated by commas")
        table[hash_token(token)] = check_tenant(tenant, "LABSIGHT_TOKENS")
    return table


def create_token(tokens_file: Path, tenant: str) -> str:
    """Append a new random token for ``tenant`` to ``tokens_file`` (hash only); return the token."""
    check_tenant(tenant, "tenant name")
    token = secrets.token_urlsafe(32)
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    with open(tokens_file, "a", encoding="utf-8") as handle:
        handle.write(f"{tenant} {hash_token(token)}\n")
    os.chmod(tokens_file, 0o600)
    return token


class BearerAuth:
    """Resolves the caller's tenant from ``authorization: Bearer <token>`` metadata.

    The tokens file is re-read when it changes, so tokens can be added or
    revoked without a restart.
    """

    def __init__(self, tokens_file: Path | None = None, env_tokens: str = "") -> None:
        self.tokens_file = tokens_file
        self._env_table = parse_token_env(env_tokens) if env_tokens else {}
        self._file_table: dict[str, str] = {}
        self._file_mtime: float | None = None
        self._lock = threading.Lock()
        self._reload_if_changed()
        if not self._env_table and not self._file_table:
            raise ValueError("no tokens configured: the tokens file and LABSIGHT_TOKENS are empty")

    def _reload_if_changed(self) -> None:
        if self.tokens_file is None:
            return
        mtime = self.tokens_file.stat().st_mtime
        if mtime == self._file_mtime:
            return
        with self._lock:
            self._file_table = parse_token_lines(
                self.tokens_file.read_text(encoding="utf-8"), str(self.tokens_file)
            )
            self._file_mtime = mtime
        log.info("tokens loaded", extra={"tenants": len(set(self._file_table.values()))})

    def tenant_for_token(self, token: str) -> str | None:
        """The tenant of ``token``, or None if it is unknown."""
        self._reload_if_changed()
        digest = hash_token(token)
        return self._env_table.get(digest) or self._file_table.get(digest)

    def __call__(self, context: grpc.ServicerContext) -> str:
        """The caller's tenant; Unauthenticated without a valid bearer token."""
        header = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "missing bearer token: send call metadata 'authorization: Bearer <token>'"
            )
        tenant = self.tenant_for_token(token.strip())
        if tenant is None:
            raise Unauthenticated("invalid bearer token")
        return tenant
