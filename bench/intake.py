"""Intake benchmark: jobs accepted per second through SubmitBatch vs pipelined XADD.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL):

    python bench/intake.py [--jobs 5000]

Both sides run in this process on the same payloads (an 8x8 uint8 image, the
`fractal` pipeline), so the printed ratio is stable on a noisy machine. The
baseline is the floor of what any Redis-backed intake can do: one XADD per
job, pipelined 256 at a time, with no validation and no job record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.catalog import GATEWAY  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.runtime.server import start_server  # noqa: E402
from services.gateway.servicer import register  # noqa: E402


def baseline_xadd(client: redis.Redis, stream: str, payloads: list[bytes]) -> float:
    """Seconds to XADD every payload, pipelined in chunks of 256."""
    start = time.perf_counter()
    for offset in range(0, len(payloads), 256):
        with client.pipeline(transaction=False) as pipe:
            for payload in payloads[offset : offset + 256]:
                pipe.xadd(stream, {"job": payload})
            pipe.execute()
    return time.perf_counter() - start


def gateway_batch(lab: LabSightClient, requests: list) -> float:
    """Seconds to submit every request through one SubmitBatch stream."""
    start = time.perf_counter()
    reply = lab.submit_batch(requests)
    elapsed = time.perf_counter() - start
    assert len(reply.job_ids) == len(requests)
    return elapsed


def main() -> None:
    """Run both sides, print rates and their ratio, clean up the keys."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, allow_anonymous=True,
                        max_queue_depth=10 * args.jobs)
    server = start_server(register, GATEWAY.grpc_services, settings)
    client = redis.Redis.from_url(redis_url)
    image = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    requests = [build_request("fractal", image, {"box_sizes": "3"}) for _ in range(args.jobs)]
    payloads = [request.SerializeToString() for request in requests]
    try:
        with LabSightClient(server.address, token="") as lab:
            gateway_batch(lab, requests[:200])  # warm up channel and caches
            gateway_s = min(gateway_batch(lab, requests) for _ in range(3))
        baseline_s = min(baseline_xadd(client, f"{prefix}:baseline", payloads) for _ in range(3))
    finally:
        server.stop(0)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
    gateway_rate, baseline_rate = args.jobs / gateway_s, args.jobs / baseline_s
    print(f"jobs: {args.jobs}")
    print(f"gateway SubmitBatch: {gateway_rate:8.0f} jobs/s")
    print(f"pipelined XADD     : {baseline_rate:8.0f} jobs/s")
    print(f"ratio gateway/XADD : {gateway_rate / baseline_rate:.3f}")
    print(f"target >= 2000 jobs/s: {'met' if gateway_rate >= 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
