"""CPU seconds of the processes a bench starts, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far: its threads, and the children
    it has waited for (Redis's AOF rewrites and snapshots run in forked children, whose CPU
    would otherwise go uncounted while it takes cores from the rest of the stack).

    Raises
    ------
    OSError
        If there is no such process.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command name: state is field 3; utime, stime, cutime, cstime are fields 14-17
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
