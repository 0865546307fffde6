"""The dynamic batcher with real threads: gathering, deadlines, splitting, errors and metrics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from labsight.errors import Unavailable
from labsight.runtime.batching import DynamicBatcher


class RecordingModel:
    """Doubles its input and records the size of every batch it ran."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        time.sleep(self.delay_s)
        return batch * 2


def _concurrently(count: int, work) -> list[object]:  # noqa: ANN001 - a callable of the index
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_single_requests_run_together_and_are_answered_separately() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=16, max_queue_delay_ms=200, name="test-gather")
    answers = _concurrently(16, lambda i: batcher.run(np.full((1, 3), float(i))))
    batcher.close()
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((1, 3), 2.0 * i))
    assert sum(model.sizes) == 16
    assert max(model.sizes) > 1
    assert batcher.stats().mean_batch_size == 16 / len(model.sizes)


def test_a_full_batch_runs_without_waiting_for_the_delay() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=4, max_queue_delay_ms=30_000, name="test-full")
    started = time.perf_counter()
    answer = batcher.run(np.ones((4, 2)), timeout_s=10)
    assert time.perf_counter() - started < 5
    assert answer.shape == (4, 2) and model.sizes == [4]
    batcher.close()


def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=64, max_queue_delay_ms=50, name="test-delay")
    started = time.perf_counter()
    batcher.run(np.ones((1, 2)), timeout_s=10)
    elapsed = time.perf_counter() - started
    batcher.close()
    assert 0.04 <= elapsed < 2
    assert model.sizes == [1]


def test_a_preferred_batch_runs_without_waiting_for_the_delay() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_queue_delay_ms=30_000,
                             name="test-preferred", preferred_batch_size=2)
    try:
        started = time.perf_counter()
        answer = batcher.run(np.ones((3, 2)), timeout_s=10)
        elapsed = time.perf_counter() - started
        lone = batcher.submit(np.ones((1, 2)))  # below the preferred size: waits for company
        time.sleep(0.2)
        waiting = not lone.done()
    finally:
        batcher.close()  # closing runs what is queued
    assert elapsed < 5 and answer.shape == (3, 2) and model.sizes[0] == 3
    assert waiting and lone.result(timeout=10).shape == (1, 2)


def test_even_shares_are_no_smaller_than_the_preferred_batch() -> None:
    # 3 items on two idle instances that run slices of 2: one instance takes 2, the other
    # the last one, never 1 + 1 + 1.
    first, second = RecordingModel(delay_s=0.2), RecordingModel(delay_s=0.2)
    batcher = DynamicBatcher([first, second], max_batch_size=32, max_queue_delay_ms=1,
                             name="share-preferred", even_shares=True, preferred_batch_size=2)

    def both_idle() -> None:
        deadline = time.monotonic() + 10
        while batcher._idle < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        both_idle()
        batcher.run(np.zeros((3, 1)), timeout_s=10)
        both_idle()
        batcher.run(np.zeros((40, 1)), timeout_s=10)
    finally:
        batcher.close()
    assert sorted(first.sizes[:1] + second.sizes[:1]) == [1, 2]
    assert sorted(first.sizes[1:] + second.sizes[1:]) == [20, 20]


def test_preferred_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="preferred_batch_size must be >= 1"):
        DynamicBatcher(lambda x: x, preferred_batch_size=0)


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=4, max_queue_delay_ms=0, name="test-split")
    items = np.arange(10, dtype=np.float64)[:, None]
    np.testing.assert_array_equal(batcher.run(items, timeout_s=10), items * 2)
    batcher.close()
    assert model.sizes == [4, 4, 2]


def test_an_error_fails_the_requests_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = {"count": 0}

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls["count"] += 1
        if calls["count"] == 1:
            raise RuntimeError("model crashed")
        return batch

    batcher = DynamicBatcher(flaky, max_batch_size=8, max_queue_delay_ms=0, name="test-error")
    with pytest.raises(RuntimeError, match="model crashed"):
        batcher.run(np.ones((2, 1)), timeout_s=10)
    np.testing.assert_array_equal(batcher.run(np.zeros((2, 1)), timeout_s=10), np.zeros((2, 1)))
    batcher.close()


def test_a_closed_batcher_finishes_queued_work_then_refuses() -> None:
    model = RecordingModel(delay_s=0.05)
    batcher = DynamicBatcher(model, max_batch_size=1, max_queue_delay_ms=0, name="test-close")
    futures = [batcher.submit(np.full((1, 1), float(i))) for i in range(3)]
    batcher.close()
    assert [float(f.result(timeout=10)[0, 0]) for f in futures] == [0.0, 2.0, 4.0]
    with pytest.raises(Unavailable):
        batcher.submit(np.ones((1, 1)))


def test_executed_batch_sizes_are_exported_as_prometheus_metrics() -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"batcher": "test-metrics"}) or 0.0

    before_count, before_sum = sample("labsight_batch_size_count"), sample("labsight_batch_size_sum")
    batcher = DynamicBatcher(RecordingModel(), max_batch_size=8, max_queue_delay_ms=0,
                             name="test-metrics")
    batcher.run(np.ones((3, 1)), timeout_s=10)
    batcher.close()
    assert sample("labsight_batch_size_count") - before_count == 1
    assert sample("labsight_batch_size_sum") - before_sum == 3


def test_bad_settings_and_empty_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(lambda x: x, max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_ms"):
        DynamicBatcher(lambda x: x, max_queue_delay_ms=-1)
    batcher = DynamicBatcher(lambda x: x, name="test-empty")
    with pytest.raises(ValueError, match="at least one row"):
        batcher.submit(np.ones((0, 2)))
    batcher.close()


def test_instances_run_batches_side_by_side_and_answer_in_order() -> None:
    first, second = RecordingModel(delay_s=0.2), RecordingModel(delay_s=0.2)
    batcher = DynamicBatcher([first, second], max_batch_size=4, max_queue_delay_ms=1,
                             name="instances")
    try:
        items = np.arange(16, dtype=np.float64).reshape(16, 1)
        started = time.perf_counter()
        out = batcher.run(items, timeout_s=10)
        elapsed = time.perf_counter() - started
    finally:
        batcher.close()
    np.testing.assert_array_equal(out, items * 2)  # parts from both instances, in order
    assert first.sizes and second.sizes and sum(first.sizes + second.sizes) == 16
    assert elapsed < 4 * 0.2 * 0.9  # four batches of 0.2 s took less than running one by one


def test_idle_instances_share_a_short_queue_evenly() -> None:
    # 40 items on two idle instances of batch 32: 20 + 20, not 32 + 8 (the second would idle
    # while the first ran the rest).
    first, second = RecordingModel(delay_s=0.2), RecordingModel(delay_s=0.2)
    batcher = DynamicBatcher([first, second], max_batch_size=32, max_queue_delay_ms=1,
                             name="share", even_shares=True)
    deadline = time.monotonic() + 10
    while batcher._idle < 2 and time.monotonic() < deadline:  # both threads started and waiting
        time.sleep(0.01)
    try:
        items = np.arange(40, dtype=np.float64).reshape(40, 1)
        out = batcher.run(items, timeout_s=10)
        deep = batcher.run(np.zeros((96, 1)), timeout_s=10)  # deeper than both: full batches
    finally:
        batcher.close()
    np.testing.assert_array_equal(out, items * 2)
    assert len(deep) == 96
    assert first.sizes[0] == second.sizes[0] == 20
    assert sorted(first.sizes[1:] + second.sizes[1:]) == [32, 32, 32]


def test_without_even_shares_an_idle_instance_takes_a_full_batch() -> None:
    first, second = RecordingModel(delay_s=0.2), RecordingModel(delay_s=0.2)
    batcher = DynamicBatcher([first, second], max_batch_size=32, max_queue_delay_ms=1,
                             name="full")
    deadline = time.monotonic() + 10
    while batcher._idle < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        batcher.run(np.zeros((40, 1)), timeout_s=10)
    finally:
        batcher.close()
    assert sorted(first.sizes + second.sizes) == [8, 32]


def test_instance_list_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="at least one batch function"):
        DynamicBatcher([], name="none")


def test_an_instance_that_finds_its_requests_taken_keeps_serving() -> None:
    # Several idle instances wait on the same queued requests' deadline; the first takes
    # them all and the others must go back to waiting, not run (or die on) an empty batch.
    models = [RecordingModel() for _ in range(4)]
    batcher = DynamicBatcher(models, max_batch_size=64, max_queue_delay_ms=5, name="taken")
    try:
        for round_index in range(30):
            rows = _concurrently(3, lambda i: batcher.run(np.full((1, 1), float(i)), timeout_s=10))
            assert sorted(float(row[0, 0]) for row in rows) == [0.0, 2.0, 4.0], round_index
        alive = [thread.is_alive() for thread in batcher._threads]
    finally:
        batcher.close()
    assert all(alive), "an instance thread died"
    assert all(size > 0 for model in models for size in model.sizes)
