"""The blob store: large job inputs kept as files (or S3 objects) that jobs name by reference.

Redis and gRPC messages carry a reference, never the bytes of a whole slide.
A reference is ``<sha256 of the content>.<unique suffix>``: the hash lets a
reader check what it got, and the suffix makes every ``put`` its own blob, so
deleting one job's input never removes another's (two jobs may send the same
file).

The store is chosen by ``LABSIGHT_BLOB_URL``: ``file:///path`` (a directory;
``labsight up`` uses ``$LABSIGHT_HOME/blobs``) or ``s3://bucket/prefix`` (any
S3-compatible store; the endpoint from ``LABSIGHT_S3_ENDPOINT``, credentials as
boto3 finds them, e.g. ``AWS_*``). Unset, there is none: the gateway and its
workers may run on different machines, and only a store they share will do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from labsight.errors import InvalidArgument, ResourceExhausted, Unavailable

BLOB_URL_ENV = "LABSIGHT_BLOB_URL"
S3_ENDPOINT_ENV = "LABSIGHT_S3_ENDPOINT"
READ_BUFFER_BYTES = 1024 * 1024
"""Range reads of an S3 blob fetch at least this much, so a TIFF header costs a few requests."""

_REFERENCE = re.compile(r"^[0-9a-f]{64}\.[0-9a-f]{32}$")


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its reference and size in bytes."""

    reference: str
    size: int

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the blob's content."""
        return self.reference.split(".", 1)[0]


def check_reference(reference: str) -> str:
    """``reference`` if it is one a store gave; ValueError otherwise (it becomes a file/key name)."""
    if not _REFERENCE.match(reference):
        raise ValueError(f"not a blob reference: {reference[:80]!r}")
    return reference


class BlobStore(ABC):
    """Where large inputs live: put a stream, open or read ranges by reference, delete."""

    def put(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> BlobInfo:
        """Store the concatenated ``chunks``; returns the new blob's reference and size.

        Raises ResourceExhausted (and stores nothing) past ``max_bytes``.
        """
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return writer.info()

    @abstractmethod
    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """A writer whose ``info()`` after a clean ``with`` block is the stored blob."""

    @abstractmethod
    def open(self, reference: str) -> IO[bytes]:
        """The blob as a seekable binary file (close it after use).

        Raises FileNotFoundError for an unknown reference.
        """

    def read_range(self, reference: str, start: int, length: int) -> bytes:
        """``length`` bytes of the blob from ``start`` (fewer at its end)."""
        with self.open(reference) as stream:
            stream.seek(start)
            return stream.read(length)

    @abstractmethod
    def size(self, reference: str) -> int:
        """The blob's size in bytes; FileNotFoundError for an unknown reference."""

    @abstractmethod
    def delete(self, reference: str) -> None:
        """Remove the blob (nothing happens if it is already gone)."""

    def local_path(self, reference: str) -> Path | None:
        """The blob's file where it is one on this machine, else None."""
        return None


class BlobWriter:
    """Streams a blob into a local file while hashing it; ``commit`` hands the file to its store.

    A writer whose ``sync_file`` is true flushes the file to disk before ``commit``: the file
    is the blob itself, and its reference goes into Redis's append-only file, which reaches the
    disk within a second (``appendfsync everysec``); a job must not outlive its input there.
    """

    sync_file = False

    def __init__(self, directory: Path, max_bytes: int | None) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=directory, prefix=".upload-")
        except OSError as error:
            raise Unavailable(f"blob store: cannot write to {directory} ({error}); check "
                              f"{BLOB_URL_ENV}") from None
        os.fchmod(fd, 0o600)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._max_bytes = max_bytes
        self._info: BlobInfo | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append ``data``; ResourceExhausted past the writer's limit."""
        self.size += len(data)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise ResourceExhausted(
                f"upload exceeds the limit of {self._max_bytes} bytes"
            )
        self._hash.update(data)
        self._file.write(data)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None and self.sync_file:
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
        try:
            if kind is None:
                reference = f"{self._hash.hexdigest()}.{uuid.uuid4().hex}"
                self.commit(reference)
                self._info = BlobInfo(reference, self.size)
        finally:
            self.path.unlink(missing_ok=True)

    def commit(self, reference: str) -> None:
        """Make the written file the blob ``reference`` (the local file is removed afterwards)."""
        raise NotImplementedError

    def info(self) -> BlobInfo:
        """The stored blob (after the ``with`` block ended without error)."""
        if self._info is None:
            raise RuntimeError("the blob was not stored")
        return self._info


class DirectoryBlobStore(BlobStore):
    """Blobs as owner-only (0600) files in one directory, on disk (data and name) before a
    reference is handed out."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """A writer into a temporary file of the directory, synced and linked into place at the
        end (the directory synced too, so the blob's name survives a crash of the machine)."""
        store = self

        class _Writer(BlobWriter):
            sync_file = True

            def commit(self, reference: str) -> None:
                os.link(self.path, store.path(reference))
                _sync_directory(store.directory)

        return _Writer(self.directory, max_bytes)

    def path(self, reference: str) -> Path:
        """The file of blob ``reference``."""
        return self.directory / check_reference(reference)

    def open(self, reference: str) -> IO[bytes]:
        """The blob's file, opened for reading."""
        return self.path(reference).open("rb")

    def size(self, reference: str) -> int:
        """The file's size."""
        return self.path(reference).stat().st_size

    def delete(self, reference: str) -> None:
        """Unlink the file."""
        self.path(reference).unlink(missing_ok=True)

    def local_path(self, reference: str) -> Path | None:
        """The blob's file."""
        return self.path(reference)


def _sync_directory(directory: Path) -> None:
    """fsync ``directory`` itself, so the names linked into it are on disk."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3BlobStore(BlobStore):
    """Blobs as objects under ``prefix`` of an S3 bucket (MinIO, AWS, any S3 API)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 client: Any = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError:
                raise ValueError(
                    f"{BLOB_URL_ENV}: an s3:// store needs boto3 (pip install 'labsight[s3]')"
                ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, reference: str) -> str:
        """The object key of blob ``reference``."""
        name = check_reference(reference)
        return f"{self.prefix}/{name}" if self.prefix else name

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """A writer into a local temporary file, uploaded (multipart where large) at the end."""
        store = self

        class _Writer(BlobWriter):
            def commit(self, reference: str) -> None:
                with store.answers("upload"):
                    store.client.upload_file(str(self.path), store.bucket, store.key(reference))

        return _Writer(Path(tempfile.gettempdir()) / "labsight-blobs", max_bytes)

    def open(self, reference: str) -> IO[bytes]:
        """The object read by ranged GETs through a buffer, so only what is read is fetched."""
        return io.BufferedReader(_S3RangeReader(self, self.key(reference), self.size(reference)),
                                 buffer_size=READ_BUFFER_BYTES)

    def size(self, reference: str) -> int:
        """The object's ContentLength."""
        from botocore.exceptions import ClientError

        with self.answers("HEAD"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self.key(reference))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(f"no blob {reference}") from None
                raise
        return int(head["ContentLength"])

    def delete(self, reference: str) -> None:
        """Delete the object (S3 answers success for a missing key too)."""
        with self.answers("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(reference))

    @contextlib.contextmanager
    def answers(self, what: str) -> Iterator[None]:
        """S3 failures (unreachable, refused credentials, no bucket) as Unavailable naming the store."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise Unavailable(
                f"blob store s3://{self.bucket}/{self.prefix}: {what} failed ({error}); check "
                f"{BLOB_URL_ENV}, {S3_ENDPOINT_ENV} and the credentials"
            ) from None


class _S3RangeReader(io.RawIOBase):
    """A seekable raw stream over one S3 object, each read a ranged GetObject."""

    def __init__(self, store: S3BlobStore, key: str, size: int) -> None:
        self._store, self._key, self._size, self._position = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        end = self._position + wanted - 1
        with self._store.answers("read"):
            answer = self._store.client.get_object(
                Bucket=self._store.bucket, Key=self._key, Range=f"bytes={self._position}-{end}"
            )
            data = answer["Body"].read()
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def blob_store_from_url(url: str) -> BlobStore:
    """The store a ``file:///path`` or ``s3://bucket/prefix`` URL names."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path:
        return DirectoryBlobStore(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3BlobStore(parsed.netloc, parsed.path, os.environ.get(S3_ENDPOINT_ENV) or None)
    raise ValueError(
        f"{BLOB_URL_ENV}: expected file:///directory or s3://bucket/prefix, got {url[:200]!r}"
    )


def blob_store() -> BlobStore | None:
    """The store of ``$LABSIGHT_BLOB_URL``; None when it is unset (large inputs then stay in Redis)."""
    url = os.environ.get(BLOB_URL_ENV, "")
    return blob_store_from_url(url) if url else None


@contextlib.contextmanager
def opened_blob(store: BlobStore | None, reference: str, field: str) -> Iterator[IO[bytes]]:
    """The blob opened for reading; a missing blob (or store) is the job's fault, named by ``field``."""
    if store is None:
        raise InvalidArgument(
            f"{field}: the input is in a blob store, and this process has none (set {BLOB_URL_ENV} "
            "as on the gateway)"
        )
    try:
        stream = store.open(reference)
    except FileNotFoundError:
        raise InvalidArgument(f"{field}: the input blob {reference} is gone from the blob store") from None
    with stream:
        yield stream
