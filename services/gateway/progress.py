"""Rate and time left of a running job, from the progress its pipeline reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ProgressClock:
    """Times one run of a job: its start, and where and when each of its steps started.

    The rate of a step is the units done since its first report over the time
    since then; the time left extrapolates the job's fraction done so far.
    """

    started: float = field(default_factory=time.monotonic)
    _steps: dict[str, tuple[float, int]] = field(default_factory=dict)

    def update(self, fraction: float, step: str, done: int, at: float | None = None) -> tuple[float, float]:
        """(units of ``step`` per second, estimated seconds left) at ``fraction`` of the job
        with ``done`` units of ``step`` done; 0 for either where not known yet."""
        now = time.monotonic() if at is None else at
        first_at, first_done = self._steps.setdefault(step, (now, done))
        rate = (done - first_done) / (now - first_at) if now > first_at else 0.0
        elapsed = now - self.started
        left = elapsed * (1.0 - fraction) / fraction if 0.0 < fraction < 1.0 else 0.0
        return max(rate, 0.0), left
