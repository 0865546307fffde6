"""Every Redis key the gateway and workers use, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = ("high", "normal")
"""Stream priorities, highest first."""

WORKER_GROUP = "workers"
"""Consumer group every worker joins on every priority stream."""


@dataclass(frozen=True)
class RedisKeys:
    """Key builder for one deployment (``prefix`` separates deployments and tests)."""

    prefix: str = "labsight"

    def job(self, job_id: str) -> str:
        """Hash with a job's record (status, progress, timestamps, ...)."""
        return f"{self.prefix}:job:{job_id}"

    def job_input(self, job_id: str) -> str:
        """Serialized JobInput of a job."""
        return f"{self.prefix}:job:{job_id}:input"

    def job_result(self, job_id: str) -> str:
        """Serialized JobResult of a finished job."""
        return f"{self.prefix}:job:{job_id}:result"

    def job_events(self, job_id: str) -> str:
        """Pub/sub channel announcing changes of a job."""
        return f"{self.prefix}:events:job:{job_id}"

    def stream(self, priority: str) -> str:
        """Stream of job ids waiting at ``priority``."""
        return f"{self.prefix}:stream:{priority}"

    def dead_letters(self) -> str:
        """Stream of jobs that failed every allowed attempt."""
        return f"{self.prefix}:stream:dead"

    def retries(self) -> str:
        """Sorted set of ``<priority>|<job id>`` waiting for a retry, scored by due time."""
        return f"{self.prefix}:retries"

    def workers(self) -> str:
        """Hash of worker consumer name to the time it last looked for work."""
        return f"{self.prefix}:workers"

    def depth(self) -> str:
        """Counter of jobs accepted and not yet ended (the queue depth)."""
        return f"{self.prefix}:depth"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of a tenant's job ids by creation time."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def idempotency(self, tenant: str, key: str) -> str:
        """Job id already submitted by ``tenant`` under idempotency ``key``."""
        return f"{self.prefix}:tenant:{tenant}:idempotency:{key}"

    def batch(self, batch_id: str) -> str:
        """Hash of a batch: owner tenant, total and per-status counts."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        """List of a batch's job ids in submission order."""
        return f"{self.prefix}:batch:{batch_id}:jobs"

    def batch_events(self, batch_id: str) -> str:
        """Pub/sub channel announcing changes of a batch's counts."""
        return f"{self.prefix}:events:batch:{batch_id}"
