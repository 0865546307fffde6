"""The benches' CPU clock counts a process's waited-for children (Redis's AOF rewrites)."""

from __future__ import annotations

import os
import subprocess
import sys

from bench._cpu import process_cpu_seconds

SPIN = "import time\nwhile time.process_time() < 0.3:\n    pass\n"


def test_a_child_that_was_waited_for_counts_in_its_parents_cpu() -> None:
    before = process_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", SPIN], check=True)  # runs, then is waited for
    assert process_cpu_seconds(os.getpid()) - before >= 0.25  # the child's 0.3 s, in 10 ms ticks
