"""Which models an operator unloaded, for the whole server: a worker that restarts applies it too.

An unload holds until the server restarts (as in Triton), so it lives in the supervisor's private
run folder, which is removed when the server stops. The worker that took the call writes it under
an exclusive ``flock`` (two workers taking calls for different models at once must not lose one).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

FILE_NAME = "unloaded-models.json"


class UnloadedModels:
    def __init__(self, run_dir: Path) -> None:
        self._path = run_dir / FILE_NAME
        self._lock = run_dir / (FILE_NAME + ".lock")

    def names(self) -> set[str]:
        try:
            return set(json.loads(self._path.read_text()))
        except (FileNotFoundError, ValueError):
            return set()

    def record(self, action: str, model: str) -> None:
        """``action`` "unload" adds ``model``; "load" removes it."""
        with self._lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = self.names()
            (names.add if action == "unload" else names.discard)(model)
            staging = self._path.with_suffix(".tmp")
            staging.write_text(json.dumps(sorted(names)))
            os.replace(staging, self._path)
