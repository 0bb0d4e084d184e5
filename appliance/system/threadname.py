"""Give the calling thread an OS-level name, so ``top -H``, ``ps -L`` and ``taskset -p`` can find it.

Python before 3.14 names threads only inside the interpreter; the kernel sees every thread of the
server as ``python``. Operators (and the audit bench) need to tell the audit writer from the
runtime threads, to watch its CPU or move it to a core of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

_PR_SET_NAME = 15
_MAX_BYTES = 15  # the kernel's limit (16 with the terminating NUL)


def name_os_thread(name: str) -> None:
    """Best effort: Linux only, and silently nothing where libc or prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:_MAX_BYTES], 0, 0, 0)
    except (OSError, AttributeError):
        return


def os_thread_names() -> set[str]:
    """The names the kernel shows for this process's threads (Linux; empty elsewhere)."""
    names = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                names.add(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
    return names
