"""A job's rate and time left follow from the progress its pipeline reports."""

from __future__ import annotations

from services.gateway.progress import ProgressClock


def test_rate_counts_units_since_the_steps_first_report() -> None:
    clock = ProgressClock(started=100.0)
    assert clock.update(0.0, "gliding box", 0, at=100.0) == (0.0, 0.0)
    rate, left = clock.update(0.25, "gliding box", 50, at=110.0)
    assert rate == 5.0 and left == 30.0  # a quarter in 10 s: 30 s to go
    rate, left = clock.update(0.5, "percolation", 10, at=120.0)
    assert rate == 0.0 and left == 20.0  # a new step has no rate until its next report
    rate, _ = clock.update(0.75, "percolation", 30, at=130.0)
    assert rate == 2.0


def test_a_finished_job_has_no_time_left() -> None:
    clock = ProgressClock(started=0.0)
    assert clock.update(1.0, "features", 32, at=5.0)[1] == 0.0
