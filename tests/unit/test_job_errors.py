"""The error a failed job records: led by its status code, whoever found it."""

from __future__ import annotations

from labsight.errors import InvalidArgument, NotFound
from services.gateway.worker import describe_error


def test_errors_the_worker_finds_read_like_service_answers() -> None:
    assert describe_error(InvalidArgument("params.model: unknown model 'x'")) == (
        "INVALID_ARGUMENT: params.model: unknown model 'x'"
    )
    assert describe_error(NotFound("model: unknown")) == "NOT_FOUND: model: unknown"
    assert describe_error(ValueError("box_sizes: empty")) == "INVALID_ARGUMENT: box_sizes: empty"


def test_a_bug_keeps_its_class_name_for_whoever_reads_the_log() -> None:
    assert describe_error(KeyError("rows")) == "INTERNAL: KeyError: 'rows'"
