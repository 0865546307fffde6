"""Fuzz benchmark: 10,000 seeded hostile calls on every RPC of real LabSight processes.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL; a private
redis-server is started when none answers):

    python bench/fuzz.py [--seed 1] [--calls 10000]

Starts the gateway, the three model services and a worker as child processes on free
loopback ports, with two tenants, and prints calls/s, each RPC's count of every status
code, each process's resident memory before and after (and its peak), how the accepted
jobs ended, and a table of failures: INTERNAL or UNKNOWN answers, hangs, wrong answers
to another tenant's ids or a bad token, crashes, dead jobs, memory growth past the bound.
Exits 1 when there is any failure. The same seed draws the same cases; a failure's
``#N`` is its case number in that stream, and ``--seed S --only N`` makes that one call
again (ids of the run's own jobs differ from run to run, their kind does not).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.redis_server import start_redis, stop_redis  # noqa: E402
from tests.reliability.fuzzing import FuzzConfig, run_fuzz  # noqa: E402

MiB = 1024 * 1024


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


def _delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def main() -> int:
    """Run the fuzzer; 0 when nothing failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rss-bound-mib", type=int, default=300,
                        help="largest accepted VmRSS growth of one process (default 300)")
    parser.add_argument("--jobs-wait-s", type=float, default=600.0,
                        help="how long accepted jobs may take to end after the last call")
    parser.add_argument("--verbose", action="store_true", help="print every call as it happens")
    parser.add_argument("--only", type=int, metavar="N",
                        help="reproduce one failure: make only case #N of the seed's stream")
    args = parser.parse_args()
    if args.only is not None:
        args.calls, args.verbose = args.only + 1, True
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"labsight-fuzz-{uuid.uuid4().hex[:8]}"
    config = FuzzConfig(seed=args.seed, calls=args.calls, rss_growth_bound=args.rss_bound_mib * MiB,
                        jobs_wait_s=args.jobs_wait_s, verbose=args.verbose, only=args.only)
    with tempfile.TemporaryDirectory(prefix="labsight-fuzz-") as workdir:
        private = None
        if not _answers(url):
            private, url = start_redis(Path(workdir) / "redis")
        try:
            report = run_fuzz(config, url, prefix, Path(workdir) / "stack")
        finally:
            if private is not None:
                stop_redis(private, url)
            else:
                _delete_keys(url, prefix)
    print(report.render())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
