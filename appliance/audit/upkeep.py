"""The server's own retention and capacity forecast for its audit log (issue 20).

Every ``audit.retention_check_interval_s``, in a thread (never on the event loop):

1. measure the database (+ WAL) and the free space of its file system;
2. purge what ``retention_days`` and ``max_bytes`` say must go, whichever cuts more: the rows to
   purge are verified first, the purge is the signed-anchor purge of ``retention``, and it is
   itself an audit record and a log line. When the size limit cuts records younger than the age
   limit, that is a warning (log, ``appliance_audit_size_limited``, status page);
3. forecast: growth = records/s over the last hour × bytes per record; time until the size limit
   (never, when ``retention_days`` holds the log below it) and until the file system is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.audit import retention, store
from appliance.audit.keys import Keyring
from appliance.audit.log import AuditLog, load_keys
from appliance.audit.model import AuditError, AuditRecord
from appliance.audit.sealing import format_time
from appliance.config import Settings

_log = logging.getLogger("appliance.audit")
#: Default size limit: this share of the file system holding the database.
DEFAULT_SHARE = 0.20
#: After a size purge the log holds this share of the limit, so purges do not run at every check.
_TARGET = 0.9
_WINDOW_S = 3600.0
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the last check measured and forecast (``inf``: never, at the current rate)."""

    database_bytes: int = 0
    max_bytes: int = 0
    filesystem_bytes: int = 0
    filesystem_free_bytes: int = 0
    rows: int = 0
    growth_bytes_per_s: float = 0.0
    seconds_to_limit: float = math.inf
    seconds_to_full: float = math.inf
    size_limited: bool = False
    purges: int = 0
    purged_records: int = 0
    last_purge: str = ""
    last_error: str = ""


def database_bytes(database: Path) -> int:
    total = 0
    for path in (database, database.with_name(database.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def forecast(size: int, limit: int, free: int, growth: float, retention_days: float) -> tuple[float, float]:
    """(seconds until ``size`` reaches ``limit``, seconds until the file system is full)."""
    if growth <= 0:
        return math.inf, math.inf
    steady = growth * retention_days * _DAY if retention_days > 0 else math.inf
    to_limit = math.inf if steady <= limit else max(0.0, (limit - size) / growth)
    held_at = min(limit, steady)  # retention keeps the log at this size
    to_full = math.inf if held_at - size < free else free / growth
    return to_limit, to_full


class Upkeep:
    """Retention and capacity of one server's log; ``check`` is blocking (run it in a thread)."""

    def __init__(self, settings: Settings, log: AuditLog, keyring: Keyring, signing: Any) -> None:
        self._settings, self._log = settings.audit, log
        self._keyring, self._signing = keyring, signing
        self._rates: deque[tuple[float, int]] = deque()
        self.capacity = Capacity()

    @classmethod
    def for_log(cls, settings: Settings, log: AuditLog) -> Upkeep:
        keyring, signing = load_keys(settings)
        return cls(settings, log, keyring, signing)

    def check(self) -> Capacity:
        """Measure, purge what must go, forecast; the result is also kept in ``capacity``."""
        if self._log.closed:  # shutting down: the log can no longer record a purge
            return self.capacity
        try:
            self.capacity = self._check()
        except (AuditError, OSError) as exc:
            _log.error("audit retention check failed: %s", exc)
            self.capacity = replace(self.capacity, last_error=str(exc))
        return self.capacity

    def _check(self) -> Capacity:
        paths = self._log.paths
        fs = os.statvfs(paths.database.parent)
        total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        limit = self._settings.max_bytes or int(total * DEFAULT_SHARE)
        purged, size_limited, detail = self._enforce(limit)
        size = database_bytes(paths.database)
        rows = self._rows()
        growth = self._growth(size, rows)
        to_limit, to_full = forecast(size, limit, free, growth, self._settings.retention_days)
        before = self.capacity
        return Capacity(size, limit, total, free, rows, growth, to_limit, to_full,
                        size_limited or (before.size_limited and not purged),
                        before.purges + (purged > 0), before.purged_records + purged,
                        detail or before.last_purge, "")

    def _rows(self) -> int:
        db = store.connect(self._log.paths.database, create=False)
        try:
            span = store.seq_span(db.conn)
        finally:
            db.close()
        return span[2] if span else 0

    def _growth(self, size: int, rows: int) -> float:
        now, written = time.monotonic(), self._log.stats().records_written
        self._rates.append((now, written))
        while now - self._rates[0][0] > _WINDOW_S:
            self._rates.popleft()
        first_time, first_written = self._rates[0]
        if now - first_time <= 0:
            return 0.0
        per_record = size / rows if rows else 0.0
        return (written - first_written) / (now - first_time) * per_record

    def _enforce(self, limit: int) -> tuple[int, bool, str]:
        """Purge what the age and size limits say; (rows purged, size limit decided, detail)."""
        paths = self._log.paths
        db = store.connect(paths.database, create=False)
        try:
            by_age, by_size = self._cuts(db.conn, limit)
        finally:
            db.close()
        cut = max(by_age or 0, by_size or 0)
        if not cut:
            return 0, False, ""
        size_limited = (by_size or 0) > (by_age or 0)
        retention.check_before_purge(paths.database, paths.checkpoints, self._signing, self._keyring, cut)
        purged = retention.purge_through(paths.database, paths.checkpoints, self._signing, cut)
        reason = (f"size limit {limit:,} bytes reached before the {self._settings.retention_days:g}-day "
                  f"retention" if size_limited else f"older than {self._settings.retention_days:g} days")
        detail = f"purged {purged} records up to seq {cut}: {reason}"
        self._log.append_nowait(AuditRecord("purge", status=200, detail=detail))
        (_log.warning if size_limited else _log.info)("audit retention %s", detail)
        return purged, size_limited, detail

    def _cuts(self, conn: Any, limit: int) -> tuple[int | None, int | None]:
        days = self._settings.retention_days
        by_age = None
        if days > 0:
            by_age = retention.cut_before(conn, format_time(time.time_ns() - int(days * _DAY * 1e9)))
        size, span = database_bytes(self._log.paths.database), store.seq_span(conn)
        if size <= limit or span is None or span[2] < 2:
            return by_age, None
        # Rows to purge from the pages in use: the WAL (up to ~4 MB between automatic
        # checkpoints) is folded in and truncated by the purge, and counting it here would purge
        # that much more than the limit needs.
        used = store.used_bytes(conn)
        count = min(span[2] - 1, math.ceil(max(0, used - int(limit * _TARGET)) / (used / span[2])))
        return by_age, (span[0] + count - 1) if count else None


async def run_forever(upkeep: Upkeep, interval_s: float) -> None:
    """The server's background task: one check per interval, each in a thread."""
    while True:
        await asyncio.to_thread(upkeep.check)
        await asyncio.sleep(max(0.05, interval_s))


async def start(settings: Settings, log: Any) -> asyncio.Task[None] | None:
    """Attach an ``Upkeep`` to a real log and start its task (None for a disabled log)."""
    if not isinstance(log, AuditLog):
        return None
    log.upkeep = await asyncio.to_thread(Upkeep.for_log, settings, log)
    return asyncio.create_task(run_forever(log.upkeep, settings.audit.retention_check_interval_s))


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
