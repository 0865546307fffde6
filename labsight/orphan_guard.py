"""``python -m labsight.orphan_guard PARENT_PID COMMAND...``: run COMMAND so it dies with its parent.

It arms the parent-death signal (SIGTERM; Linux) and execs COMMAND, which
keeps it across exec, so any executable (redis-server too) is stopped when
`labsight up` dies, even by SIGKILL. This runs in a process of its own rather
than in a ``preexec_fn``: forking a process whose threads use gRPC runs gRPC's
fork handlers, which can abort the child, while without ``preexec_fn`` Python
spawns with vfork and runs none.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    """Arm the parent-death signal, check the parent is still ``argv[0]``, exec ``argv[1:]``."""
    parent_pid, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        sys.exit(1)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
