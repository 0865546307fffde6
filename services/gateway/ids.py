"""The syntax of every id a client sends (job ids, batch ids, idempotency keys), checked
before any of them becomes part of a Redis key."""

from __future__ import annotations

import re

from labsight.errors import InvalidArgument, echo

MAX_ID_CHARS = 128
"""Longest id a client may send."""

ID_CHARACTERS = "A-Z a-z 0-9 . _ ~ -"
"""What an id is made of, as error messages say it: no ':' (the separator of Redis keys),
no spaces, nothing that needs quoting in a URL."""

_ID = re.compile(rf"[A-Za-z0-9._~-]{{1,{MAX_ID_CHARS}}}")


def check_id(field: str, value: str) -> str:
    """``value`` if it is a well-formed id; InvalidArgument naming ``field`` otherwise.

    Job ids are the ones the gateway made (32 hex digits), batch ids and
    idempotency keys are the client's own; all follow this one syntax, so
    none can reach into another key (``<id>:result``) or another tenant's
    namespace.
    """
    if _ID.fullmatch(value):
        return value
    if not value:
        raise InvalidArgument(f"{field}: is empty; an id is required")
    raise InvalidArgument(
        f"{field}: {echo(value)} is not an id: use 1 to {MAX_ID_CHARS} of the characters "
        f"{ID_CHARACTERS}"
    )


def check_optional_id(field: str, value: str) -> str:
    """``check_id`` for a field that may be left empty ("" is returned as is)."""
    return check_id(field, value) if value else value
