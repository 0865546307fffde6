"""The journal of a resumable submission and the parts it is sent in."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.batch_submit import PART_JOBS, Journal, _parts, journal_path, submission_id
from labsight.v1 import gateway_pb2 as pb


def _request(index: int, image_bytes: int = 10) -> pb.SubmitJobRequest:
    request = pb.SubmitJobRequest(pipeline="fractal", idempotency_key=f"cli-{index}")
    request.input.image.encoded.data = b"x" * image_bytes
    return request


def test_journal_keeps_each_recorded_part_and_ignores_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "submissions" / "a.jsonl"
    journal = Journal.start(path, "plate-1", 3)
    journal.record(["k1", "k2"], ["j1", "j2"])
    with path.open("a") as file:
        file.write('{"key": "k3", "job')  # an interruption in the middle of a write
    loaded = Journal.load(path)
    assert loaded is not None
    assert (loaded.batch_id, loaded.total, loaded.job_ids) == ("plate-1", 3, {"k1": "j1", "k2": "j2"})
    assert Journal.load(tmp_path / "none.jsonl") is None


def test_parts_hold_at_most_part_jobs_and_part_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [len(part) for part in _parts(_request(i) for i in range(2 * PART_JOBS + 3))]
    assert sizes == [PART_JOBS, PART_JOBS, 3]
    monkeypatch.setattr("labsight.batch_submit.PART_BYTES", 250)
    monkeypatch.setattr("labsight.batch_submit.FIRST_PART_BYTES", 250)
    big = [len(part) for part in _parts([_request(0, 100), _request(1, 100), _request(2, 400),
                                         _request(3, 10)])]
    assert big == [2, 1, 1]  # a job larger than a part goes alone


def test_the_first_part_is_small_so_the_workers_start_while_the_rest_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = _request(0, 100).ByteSize()
    monkeypatch.setattr("labsight.batch_submit.PART_BYTES", 8 * size)
    monkeypatch.setattr("labsight.batch_submit.FIRST_PART_BYTES", 2 * size)
    sizes = [len(part) for part in _parts(_request(i, 100) for i in range(12))]
    assert sizes == [2, 8, 2]  # then parts of PART_BYTES
    larger = [len(part) for part in _parts([_request(0, 4 * size), _request(1, 100)])]
    assert larger == [1, 1]  # a first job over FIRST_PART_BYTES still goes first, alone


def test_every_job_of_a_resumable_submission_needs_a_key() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        list(_parts([pb.SubmitJobRequest(pipeline="fractal")]))


def test_the_same_submission_finds_the_same_journal(tmp_path: Path) -> None:
    first = submission_id("gw:1", "fractal", {"a": "1", "b": "2"}, ["/p/x.png"])
    assert first == submission_id("gw:1", "fractal", {"b": "2", "a": "1"}, ["/p/x.png"])
    assert first != submission_id("gw:1", "fractal", {"a": "1", "b": "3"}, ["/p/x.png"])
    assert journal_path(first, tmp_path) == tmp_path / "submissions" / f"{first}.jsonl"
