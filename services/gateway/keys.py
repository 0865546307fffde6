"""Every Redis key the gateway and workers use, built in one place.

Keys named by a client's choice (batch ids, idempotency keys) live under the
tenant's namespace; job keys are named by the gateway's random job ids and
are checked against their owner on every read.
"""

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
        return f"{self._tenant(tenant)}:jobs"

    def idempotency(self, tenant: str, key: str) -> str:
        """Job id already submitted by ``tenant`` under idempotency ``key``."""
        return f"{self._tenant(tenant)}:idempotency:{key}"

    def batch(self, tenant: str, batch_id: str) -> str:
        """Hash of a tenant's batch: total, per-status counts and the tenant (set even when empty)."""
        return f"{self._tenant(tenant)}:batch:{batch_id}"

    def batch_jobs(self, tenant: str, batch_id: str) -> str:
        """List of a tenant's batch's job ids in submission order."""
        return f"{self._tenant(tenant)}:batch:{batch_id}:jobs"

    def batch_events(self, tenant: str, batch_id: str) -> str:
        """Pub/sub channel announcing changes of a tenant's batch's counts."""
        return f"{self.prefix}:events:tenant:{tenant}:batch:{batch_id}"

    def _tenant(self, tenant: str) -> str:
        # Batch ids and idempotency keys are the client's names: under the tenant, two
        # tenants' "plate-1" are two batches. Neither tenants nor ids contain ':' (see
        # services/gateway/ids.py and auth.py), so no name reaches into another's keys.
        return f"{self.prefix}:tenant:{tenant}"
