"""`labsight submit DIR --resume` against a real stack: a folder submission cut at about half
(a refusal, a killed CLI) and resumed ends with one job per file, none twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labsight.batch_submit import PART_JOBS, Journal
from labsight.cli import main
from labsight.errors import InvalidArgumentError
from labsight.images import encode_png
from labsight.v1 import gateway_pb2 as pb

from .conftest import InProcessStack

IMAGES = 200
FAST = ("--param", "box_sizes=3-9")
"""Fractal parameters that keep each of the 200 jobs to milliseconds."""


def _folder(root: Path) -> list[Path]:
    """IMAGES small PNGs, each of its own content, named in sorted order."""
    rng = np.random.default_rng(15)
    root.mkdir()
    paths = []
    for index in range(IMAGES):
        path = root / f"well_{index:03d}.png"
        path.write_bytes(encode_png(rng.integers(0, 255, (24, 24), dtype=np.uint8)))
        paths.append(path)
    return paths


def _submit(stack: InProcessStack, home: Path, folder: Path, *extra: str) -> subprocess.Popen[str]:
    """The `labsight submit` process of the folder as batch 'plate-7', stderr piped."""
    command = [sys.executable, "-m", "labsight.cli", "submit", "fractal", str(folder), *FAST,
               "--batch", "plate-7", "--gateway", stack.gateway.address, "--token", "", *extra]
    env = {**os.environ, "LABSIGHT_HOME": str(home)}
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _journal(home: Path) -> Path:
    (journal,) = (home / "submissions").glob("*.jsonl")
    return journal


def _journals(home: Path) -> list[Path]:
    """The journals left in ``home``: those of submissions not yet completely queued."""
    return sorted((home / "submissions").glob("*.jsonl"))


def _assert_one_finished_job_per_file(stack: InProcessStack, files: list[Path]) -> None:
    jobs = stack.client.batch_jobs("plate-7")
    assert len(jobs) == IMAGES and len({job.job_id for job in jobs}) == IMAGES
    assert sorted(job.input_name for job in jobs) == sorted(path.name for path in files)
    ended = [stack.client.wait(job.job_id, timeout_s=300) for job in jobs]
    assert all(job.status == pb.JOB_STATUS_DONE for job in ended), [job.error for job in ended]
    results = [result for _, result in stack.client.batch_results("plate-7")]
    assert len(results) == IMAGES and None not in results
    assert len({result.input_name for result in results}) == IMAGES
    assert stack.client.batch("plate-7").total == IMAGES


def _submit_here(stack: InProcessStack, folder: Path, capsys: pytest.CaptureFixture[str],
                 *extra: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `labsight submit` of the folder as batch 'plate-7', run
    in this process."""
    status = main(["submit", "fractal", str(folder), *FAST, "--batch", "plate-7",
                   "--gateway", stack.gateway.address, "--token", "", *extra])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_submission_refused_at_half_resumes_into_one_job_per_file(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABSIGHT_HOME", str(tmp_path / "home"))
    files = _folder(tmp_path / "plate")
    good = files[100].read_bytes()
    files[100].write_bytes(good[:8] + b"not the rest of a PNG")  # passes the CLI's check by its head
    stack.start_worker()
    status, _, err = _submit_here(stack, tmp_path / "plate", capsys)
    queued = 100 // PART_JOBS * PART_JOBS  # the parts before the one holding the bad file
    assert status == 2, err
    assert "well_100.png: INVALID_ARGUMENT" in err
    assert f"the first {queued} of {IMAGES} files are queued" in err and "--resume" in err
    assert stack.client.batch("plate-7").total == queued
    # As if the CLI had been killed after the gateway queued the last part and before the
    # journal recorded it: the resumed run sends that part again, under the same keys.
    journal = _journal(tmp_path / "home")  # kept: the submission is not complete
    assert len(Journal.load(journal).job_ids) == queued
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[: 1 + queued - PART_JOBS]) + "\n")

    files[100].write_bytes(good)
    status, out, err = _submit_here(stack, tmp_path / "plate", capsys, "--resume")
    assert status == 0, err
    assert f"batch plate-7: {IMAGES} jobs, {queued - PART_JOBS} queued before this resumed run" in err
    assert len(out.splitlines()) == IMAGES
    assert not journal.exists() and _journals(tmp_path / "home") == []  # complete: removed
    _assert_one_finished_job_per_file(stack, files)


def test_a_killed_submission_resumes_into_one_job_per_file(stack: InProcessStack, tmp_path: Path) -> None:
    files = _folder(tmp_path / "plate")
    stack.start_worker()
    first = _submit(stack, tmp_path / "home", tmp_path / "plate")
    assert first.stderr is not None
    for line in first.stderr:  # a line per part when stderr is not a terminal
        found = re.search(r"\] (\d+)/200 files submitted", line)
        if found and int(found.group(1)) >= IMAGES // 2:
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    first.stderr.close()
    first.stdout.close()
    cut_at = stack.client.batch("plate-7").total
    journal = _journal(tmp_path / "home")  # the killed run's, kept
    assert 0 < len(Journal.load(journal).job_ids) < IMAGES
    resumed = _submit(stack, tmp_path / "home", tmp_path / "plate", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert _journals(tmp_path / "home") == []
    print(f"killed with {cut_at} of {IMAGES} jobs queued")  # where the kill landed, for the log
    _assert_one_finished_job_per_file(stack, files)


def test_resume_and_resubmit_together_are_refused(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="--resume .* --resubmit"):
        _submit_here(stack, tmp_path, capsys, "--resume", "--resubmit")
    assert stack.client.list_jobs() == []


def test_the_sdks_folder_submit_resumes_after_a_refused_part(
    stack: InProcessStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_HOME", str(tmp_path / "home"))
    files = _folder(tmp_path / "plate")
    for extra in files[2 * PART_JOBS + 8 :]:
        extra.unlink()
    files = files[: 2 * PART_JOBS + 8]
    good = files[PART_JOBS + 3].read_bytes()
    files[PART_JOBS + 3].write_bytes(good[:8] + b"cut")
    with pytest.raises(InvalidArgumentError, match=r"jobs\[3\]"):
        stack.client.submit_folder("fractal", [tmp_path / "plate"], {"box_sizes": "3-9"},
                                   batch_id="plate-8", progress=False)
    assert stack.client.batch("plate-8").total == PART_JOBS
    (journal,) = _journals(tmp_path / "home")
    files[PART_JOBS + 3].write_bytes(good)
    submitted = stack.client.submit_folder("fractal", [tmp_path / "plate"], {"box_sizes": "3-9"},
                                           resume=True, progress=False)
    assert submitted.batch_id == "plate-8" and submitted.sent == len(files) - PART_JOBS
    assert submitted.journal == journal and not journal.exists()
    jobs = stack.client.batch_jobs("plate-8")
    assert [job.job_id for job in jobs] == submitted.job_ids
    assert [job.input_name for job in jobs] == [path.name for path in files]


def test_a_complete_submission_leaves_no_journal_and_a_second_one_reuses_its_jobs(
    stack: InProcessStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_HOME", str(tmp_path / "home"))
    _folder(tmp_path / "plate")
    for extra in sorted((tmp_path / "plate").iterdir())[PART_JOBS + 5 :]:
        extra.unlink()
    first = stack.client.submit_folder("fractal", [tmp_path / "plate"], {"box_sizes": "3-9"},
                                       batch_id="plate-9", progress=False)
    assert first.sent == PART_JOBS + 5 and not first.journal.exists()
    assert _journals(tmp_path / "home") == []
    # --resume without a journal starts afresh; the gateway knows every key already.
    again = stack.client.submit_folder("fractal", [tmp_path / "plate"], {"box_sizes": "3-9"},
                                       resume=True, progress=False)
    assert again.job_ids == first.job_ids and _journals(tmp_path / "home") == []
    assert stack.client.batch("plate-9").total == PART_JOBS + 5
