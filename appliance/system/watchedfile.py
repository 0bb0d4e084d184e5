"""A small file whose parsed content is re-read when it changes (key store, JWKS).

The server must see a revoked key without a restart, but must not stat a file on every request:
``current()`` stats at most once per ``interval`` seconds and re-parses only when the file's
identity (inode, size, mtime) changed. A file that cannot be parsed fails closed: its content
becomes ``empty`` until it is fixed, and the error is logged once per change.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("appliance.auth")


class WatchedFile(Generic[T]):
    def __init__(self, path: Path, parse: Callable[[bytes], T], empty: T, interval: float = 1.0) -> None:
        self.path, self._parse, self._empty, self._interval = path, parse, empty, interval
        self._value: T = empty
        self._identity: tuple[int, int, int] | None = None
        self._checked = float("-inf")

    def current(self) -> T:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            self._refresh()
        return self._value

    def reload(self) -> T:
        """Re-read now (tests, and the first read at startup)."""
        self._checked = time.monotonic()
        self._refresh()
        return self._value

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._identity, self._value = None, self._empty
            return
        except OSError as exc:
            log.error("cannot stat %s: %s", self.path, exc)
            self._identity, self._value = None, self._empty
            return
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._identity:
            return
        self._identity = identity
        try:
            self._value = self._parse(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable, nothing in it is accepted until it is fixed: %s", self.path, exc)
            self._value = self._empty
