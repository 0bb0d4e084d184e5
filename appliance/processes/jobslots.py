"""``jobs.max_running`` for the whole server: one lock file per running job, shared by the workers.

A worker starts a job only while it holds an exclusive ``flock`` on one of ``max_running`` slot
files in the run folder, so the server runs no more jobs at once than configured, whichever
workers took the submissions. The kernel drops the lock of a worker that dies: no slot leaks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class JobSlots:
    def __init__(self, run_dir: Path, count: int) -> None:
        self._paths = [run_dir / f"job-slot-{i}" for i in range(max(1, count))]

    def try_take(self) -> int | None:
        """A held slot (a file descriptor to hand back to ``release``), or None when all are taken."""
        for path in self._paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @staticmethod
    def release(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the only descriptor drops the lock
