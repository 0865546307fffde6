"""Submitting many jobs as one batch, part by part, so an interrupted submission resumes.

Each part is one SubmitBatch call (the gateway queues a call's jobs all or none). After
a part is queued its jobs' idempotency keys and ids are appended to a journal in the
LabSight home (``<home>/submissions/<submission>.jsonl``); ``resume`` sends only the jobs
the journal lacks, under the journal's batch id. A part the gateway queued just before an
interruption, but which the journal missed, is sent again under the same keys, and the
gateway answers with the jobs it already has: nothing is queued twice. A journal is
removed once every job of its submission is queued, and kept while any is missing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labsight.home import home_dir

if TYPE_CHECKING:
    from labsight.client import LabSightClient
    from labsight.v1 import gateway_pb2 as pb

PART_JOBS = 16
"""Most jobs in one part: what an interruption can cost is one part sent again."""

PART_BYTES = 16 * 1024 * 1024
"""Most request bytes in one part (a larger job goes alone)."""

FIRST_PART_BYTES = 1024 * 1024
"""Most request bytes in the first part (at least one job): the workers start on it while the
rest is sent, instead of waiting for a whole part of large jobs (16 MiB, a tenth of a second
and more through the gateway and Redis) to arrive."""

JOURNALS_DIR = "submissions"
"""Folder of the home that keeps one journal per unfinished submission (see ``journal_path``)."""


def submission_id(*parts: object) -> str:
    """A name for a submission made of ``parts`` (JSON-ready: the gateway, pipeline,
    parameters, input names...): the same parts give the same name, and the same journal."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def journal_path(submission: str, home: Path | None = None) -> Path:
    """The journal of ``submission`` (see ``submission_id``) in ``home`` (default: the LabSight home)."""
    return (home or home_dir()) / JOURNALS_DIR / f"{submission}.jsonl"


@dataclass
class Journal:
    """What a submission's gateway has queued: its batch id and the job id of each idempotency key.

    The file is JSON lines: ``{"batch_id": ..., "total": ...}`` first, then one
    ``{"key": ..., "job_id": ...}`` per queued job, appended after each part.
    """

    path: Path
    batch_id: str
    total: int
    job_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, path: Path, batch_id: str, total: int) -> Journal:
        """A new, empty journal at ``path`` (replacing one there)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"batch_id": batch_id, "total": total}) + "\n")
        return cls(path, batch_id, total)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """The journal at ``path``; None if there is none. A last line cut by an interruption
        is ignored (its jobs are sent again, and the gateway knows their keys)."""
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return None
        header = json.loads(lines[0])
        journal = cls(path, header["batch_id"], header["total"])
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            journal.job_ids[entry["key"]] = entry["job_id"]
        return journal

    def record(self, keys: Sequence[str], job_ids: Sequence[str]) -> None:
        """Append a queued part (its keys and their job ids, in order)."""
        lines = [json.dumps({"key": key, "job_id": job_id})
                 for key, job_id in zip(keys, job_ids, strict=True)]
        with self.path.open("a") as file:
            file.write("".join(line + "\n" for line in lines))
        self.job_ids.update(zip(keys, job_ids, strict=True))


@dataclass(frozen=True)
class SubmittedBatch:
    """The outcome of ``submit_in_parts``."""

    batch_id: str
    job_ids: list[str]
    """One per request, in order."""
    sent: int
    """Jobs sent in this call (the others were in the journal already)."""
    journal: Path
    """Where the submission's journal was: it is removed once every job is queued."""


def submit_in_parts(
    client: LabSightClient,
    requests: Iterable[pb.SubmitJobRequest],
    total: int,
    journal_file: Path,
    *,
    batch_id: str = "",
    resume: bool = False,
    on_part: Callable[[int, int], None] | None = None,
) -> SubmittedBatch:
    """Submit ``requests`` as one batch, PART_JOBS at a time, recording each part in a journal;
    the journal is removed once all ``total`` jobs are queued, and kept after an interruption.

    Parameters
    ----------
    client : LabSightClient
        The gateway's client.
    requests : iterable of SubmitJobRequest
        The ``total`` jobs, each with an idempotency key that its content decides
        (e.g. ``labsight.inputs.content_key``); built lazily, so only a part is in memory.
    total : int
        How many requests there are.
    journal_file : pathlib.Path
        The submission's journal (see ``journal_path``).
    batch_id : str
        The batch (default: a new id, or with ``resume`` the journal's).
    resume : bool
        Continue the journal's submission: jobs it holds are not sent again.
        Without a journal the submission starts afresh.
    on_part : callable, optional
        Called as ``on_part(done, total)`` once before the first part and after each.

    Returns
    -------
    SubmittedBatch

    Raises
    ------
    labsight.errors.ServiceError
        The gateway's refusal of a part; the parts before it stay queued and in
        the journal (which is kept), ``resume`` continues from there. A refusal's ``jobs[i]`` counts
        from the part's first job, which is job ``done`` of the last ``on_part`` call.
    ValueError
        If ``resume`` is asked with a ``batch_id`` other than the journal's.
    """
    journal = Journal.load(journal_file) if resume else None
    if journal is not None and batch_id and batch_id != journal.batch_id:
        raise ValueError(f"batch_id: {batch_id!r}, but the submission being resumed is batch "
                         f"{journal.batch_id!r} (journal {journal_file})")
    if journal is None:
        journal = Journal.start(journal_file, batch_id or uuid.uuid4().hex, total)
    job_ids: list[str] = []
    sent = 0
    if on_part:
        on_part(0, total)
    for part in _parts(requests):
        new = [request for request in part if request.idempotency_key not in journal.job_ids]
        if new:
            answer = client.submit_batch(new, batch_id=journal.batch_id)
            journal.record([request.idempotency_key for request in new], answer.job_ids)
            sent += len(new)
        job_ids += [journal.job_ids[request.idempotency_key] for request in part]
        if on_part:
            on_part(len(job_ids), total)
    if len(job_ids) == total:  # complete: nothing is left to resume
        journal_file.unlink(missing_ok=True)
    return SubmittedBatch(journal.batch_id, job_ids, sent, journal_file)


def _parts(requests: Iterable[pb.SubmitJobRequest]) -> Iterator[list[pb.SubmitJobRequest]]:
    """:func:`request_parts` of ``requests``, each of which needs an idempotency key."""
    for part in request_parts(requests):
        if not all(request.idempotency_key for request in part):
            raise ValueError("every job of a resumable submission needs an idempotency key")
        yield part


def request_parts(
    requests: Iterable[pb.SubmitJobRequest], part_jobs: int = PART_JOBS
) -> Iterator[list[pb.SubmitJobRequest]]:
    """``requests`` in parts of at most ``part_jobs`` jobs and PART_BYTES bytes (a larger job
    alone), the first of at most FIRST_PART_BYTES (at least one job): the SubmitBatch calls
    of a submission, as ``submit_in_parts`` sends them.

    Examples
    --------
    >>> from labsight.v1 import gateway_pb2 as pb
    >>> [len(part) for part in request_parts([pb.SubmitJobRequest(pipeline="fractal")] * 40)]
    [16, 16, 8]
    """
    part: list[pb.SubmitJobRequest] = []
    size = 0
    limit = FIRST_PART_BYTES
    for request in requests:
        request_size = request.ByteSize()
        if part and (len(part) >= part_jobs or size + request_size > limit):
            yield part
            part, size, limit = [], 0, PART_BYTES
        part.append(request)
        size += request_size
    if part:
        yield part
