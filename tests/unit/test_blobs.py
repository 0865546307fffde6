"""The blob store: a directory of 0600 files, and S3 against a real S3 API server (moto)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from labsight.blobs import (
    BlobStore,
    DirectoryBlobStore,
    S3BlobStore,
    blob_store,
    blob_store_from_url,
)
from labsight.errors import ResourceExhausted, Unavailable
from labsight.home import Endpoints, read_endpoints, write_endpoints

CONTENT = bytes(range(256)) * 9000  # 2.3 MB: more than one S3 read buffer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, as MinIO or AWS would answer."""
    server_module = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3BlobStore:
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="labsight")
    monkeypatch.setenv("LABSIGHT_S3_ENDPOINT", s3_endpoint)
    store = blob_store_from_url("s3://labsight/jobs/inputs")
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "directory":
        return DirectoryBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")


def test_put_then_read_whole_and_ranges(store: BlobStore) -> None:
    info = store.put(CONTENT[i : i + 100_000] for i in range(0, len(CONTENT), 100_000))
    assert info.size == len(CONTENT)
    assert info.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert store.size(info.reference) == len(CONTENT)
    assert store.read_range(info.reference, 1_500_000, 10) == CONTENT[1_500_000:1_500_010]
    assert store.read_range(info.reference, len(CONTENT) - 3, 10) == CONTENT[-3:]
    with store.open(info.reference) as stream:
        stream.seek(-5, os.SEEK_END)
        assert stream.read() == CONTENT[-5:]
        stream.seek(0)
        assert stream.read() == CONTENT


def test_same_content_twice_is_two_blobs_so_deleting_one_keeps_the_other(store: BlobStore) -> None:
    first, second = store.put([b"slide"]), store.put([b"slide"])
    assert first.reference != second.reference and first.sha256 == second.sha256
    store.delete(first.reference)
    with pytest.raises(FileNotFoundError):
        store.size(first.reference)
    assert store.read_range(second.reference, 0, 5) == b"slide"
    store.delete(first.reference)  # already gone: no error


def test_upload_over_the_limit_stores_nothing(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(ResourceExhausted, match="limit of 10 bytes"):
        store.put([b"12345", b"678901"], max_bytes=10)
    if isinstance(store, DirectoryBlobStore):
        assert list(store.directory.iterdir()) == []


def test_directory_blobs_are_owner_only_files(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    info = store.put([b"private"])
    path = store.local_path(info.reference)
    assert path is not None and path.read_bytes() == b"private"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in store.directory.iterdir()] == [info.reference]


def test_a_directory_blob_is_on_disk_data_first_then_its_name_before_its_reference_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob's data is synced before its name exists, and the directory after the link."""
    store = DirectoryBlobStore(tmp_path / "blobs")
    synced: list[tuple[str, int, set[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        kind = "directory" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        names = {path.name for path in store.directory.iterdir() if not path.name.startswith(".")}
        synced.append((kind, os.fstat(descriptor).st_ino, names))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    info = store.put([CONTENT[:1000], CONTENT[1000:]])
    blob = store.path(info.reference)
    assert [kind for kind, _, _ in synced] == ["file", "directory"]
    assert synced[0][1] == blob.stat().st_ino  # the blob's own data
    assert synced[0][2] == set()  # synced before any name pointed at it
    assert synced[1][1] == store.directory.stat().st_ino
    assert synced[1][2] == {info.reference}  # the directory after the link
    assert blob.read_bytes() == CONTENT


def test_a_refused_upload_syncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    with pytest.raises(ResourceExhausted):
        store.put([CONTENT], max_bytes=10)
    assert calls == []


def test_references_that_a_store_did_not_give_are_refused(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="not a blob reference"):
        store.open("../../etc/passwd")


def test_store_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABSIGHT_BLOB_URL", raising=False)
    assert blob_store() is None  # gateway and workers may not share a disk: only a named store
    monkeypatch.setenv("LABSIGHT_BLOB_URL", f"file://{tmp_path}/elsewhere")
    chosen = blob_store()
    assert isinstance(chosen, DirectoryBlobStore) and chosen.directory == tmp_path / "elsewhere"
    monkeypatch.setenv("LABSIGHT_BLOB_URL", "ftp://host/x")
    with pytest.raises(ValueError, match="LABSIGHT_BLOB_URL"):
        blob_store()


def test_up_endpoints_hand_the_blob_store_to_every_process_started_from_them(tmp_path: Path) -> None:
    endpoints = Endpoints(redis_url="redis://x", key_prefix="p", gateway="g",
                          blob_url=(tmp_path / "blobs").as_uri())
    write_endpoints(endpoints, tmp_path)
    environment = read_endpoints(tmp_path).as_environment()  # what `labsight worker` adds
    assert environment["LABSIGHT_BLOB_URL"] == f"file://{tmp_path}/blobs"
    assert "LABSIGHT_BLOB_URL" not in Endpoints(redis_url="r", key_prefix="p", gateway="g").as_environment()


def test_an_unreachable_s3_store_is_unavailable_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3BlobStore("labsight", "inputs", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(Unavailable, match="blob store s3://labsight/inputs: upload failed"):
        store.put([b"slide"])
    with pytest.raises(Unavailable, match="HEAD failed"):
        store.size("0" * 64 + "." + "0" * 32)


def test_a_directory_that_cannot_be_written_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(Unavailable, match="cannot write to"):
        DirectoryBlobStore(tmp_path / "file" / "blobs").put([b"slide"])
