"""Which process is which, across restarts: a pid together with the process's start time, so a pid
the system reused is not taken for the process that held it before.

psutil derives a start time from the boot time, which moves a little when the wall clock is stepped,
so two readings of one process may differ by a fraction of a second: they match within a second.
"""
from __future__ import annotations

import psutil

SAME_START_SECONDS = 1.0


def this_process() -> tuple[int, float]:
    me = psutil.Process()
    return me.pid, me.create_time()


def running(pid: int, started: float) -> psutil.Process | None:
    """The process with this pid and start time if it still runs (a zombie does not); else None."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) < SAME_START_SECONDS:
            return process
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return psutil.Process(pid)  # someone else's process by that pid and start: alive, not ours to judge
    return None
