"""How a job's serialized JobResult is kept in Redis: LZ4-compressed where that pays.

Results are kept for days (the worker's result TTL), read back whole by GetJobResult and
GetBatchResults, and written again by every AOF rewrite while they are kept. Many are mostly
label images (the ``cells`` and ``hpa-cells`` pipelines return two 512² uint16 label tensors
per field), which LZ4 shrinks several-fold for well under a millisecond. A value that starts
with :data:`PACKED_MAGIC` is compressed; any other value is the serialized JobResult itself,
as results were kept before and as small or incompressible ones still are.
"""

from __future__ import annotations

from numcodecs import lz4

PACKED_MAGIC = b"L\x04Z\x01"
"""Start of a packed result. Its first byte, 0x4C, is the tag of an end-group, which no
serialized protobuf message can start with, so a packed value is never read as a JobResult."""

PACK_MIN_BYTES = 64 << 10
"""Results smaller than this are kept as they are: the saving would not pay its round trip."""

PACK_MIN_SAVING = 0.1
"""A packed result is kept only if it is at least this part smaller than the plain one."""

SIZE_HEAD_BYTES = len(PACKED_MAGIC) + 4
"""Bytes at the start of a kept value that :func:`plain_size` needs (the magic, then the
little-endian uncompressed size that LZ4's frame starts with)."""


def pack_result(data: bytes) -> bytes:
    """The value to keep in Redis for a serialized JobResult ``data``: packed, or ``data``
    itself if it is small or would shrink by less than PACK_MIN_SAVING."""
    if len(data) < PACK_MIN_BYTES:
        return data
    packed = PACKED_MAGIC + lz4.compress(data)
    return packed if len(packed) <= (1 - PACK_MIN_SAVING) * len(data) else data


def unpack_result(value: bytes) -> bytes:
    """The serialized JobResult that ``value`` (a kept value, packed or not) holds."""
    if value.startswith(PACKED_MAGIC):
        return lz4.decompress(memoryview(value)[len(PACKED_MAGIC):])
    return value


def plain_size(head: bytes, kept_bytes: int) -> int:
    """The size of the serialized JobResult in a kept value of ``kept_bytes`` bytes, from its
    first SIZE_HEAD_BYTES ``head`` (as GETRANGE key 0 SIZE_HEAD_BYTES-1 answers them)."""
    if head.startswith(PACKED_MAGIC) and len(head) >= SIZE_HEAD_BYTES:
        return int.from_bytes(head[len(PACKED_MAGIC):SIZE_HEAD_BYTES], "little")
    return kept_bytes
