"""The writer thread: seals records, group-commits them and signs checkpoints.

All disk and crypto work of the log happens here, never on the event loop. Records that arrive
while one transaction commits share the next transaction and its single fsync (natural group
commit); ``group_commit_ms`` > 0 also holds a batch open that long after its first record, which
saves fsyncs but costs every record that wait. Awaiting appenders are woken with one
``call_soon_threadsafe`` per event loop per batch. A batch is chained onto the head this writer
last wrote and stored by one self-committing statement that inserts only if that is still the
log's head; when another process (the CLI rotating a key, a purge) moved it, the batch is re-sealed
onto the head read inside a ``BEGIN IMMEDIATE`` transaction, so the chain never forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit import checkpoints, store
from appliance.audit.keys import Keyring
from appliance.audit.model import AuditError, AuditRecord, AuditStats
from appliance.audit.sealing import NoncePool, Prepared, format_time, prepare, seal_chain
from appliance.system.threadname import name_os_thread
from appliance.system.threadsched import defer_to_event_loop

_log = logging.getLogger(__name__)
_MAX_BATCH = 4096
#: While commits fail, how often the idle writer tries a small write to learn the cause has gone
#: (a not-ready server gets no traffic that would tell it).
PROBE_INTERVAL_S = 1.0
#: While commits keep failing, one log line per this many seconds carries the counts.
FAILURE_LOG_INTERVAL_S = 10.0


@dataclass(slots=True)
class Item:
    record: AuditRecord
    time_ns: int
    enqueued: float
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(slots=True)
class Stop:
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True, slots=True)
class WriterConfig:
    checkpoint_path: Path
    group_commit_s: float
    checkpoint_every: int
    checkpoint_interval_s: float


def _settle(futures: list[asyncio.Future[None]], error: str | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(AuditError(error))


def wake(items: Sequence[Item | Stop], error: str | None = None) -> None:
    """Resolve the futures of ``items`` on their own loops, one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for item in items:
        if item.future is not None and item.loop is not None:
            by_loop.setdefault(item.loop, []).append(item.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, futures, error)


class Writer(threading.Thread):
    """Owns the database connection and the signing key; everything else talks to its queue."""

    def __init__(self, db: sqlite_utils.Database, log_id: str, keyring: Keyring,
                 signing_key: Ed25519PrivateKey, config: WriterConfig) -> None:
        super().__init__(name="audit-writer", daemon=True)
        self._db, self._log_id, self._keyring, self._signing_key = db, log_id, keyring, signing_key
        self._config = config
        self._queue: queue.SimpleQueue[Item | list[Item] | Stop] = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._submitted = self._settled = self._written = self._commits = 0
        self._dropped = self._failures = 0
        self._failure_logged = -FAILURE_LOG_INTERVAL_S
        self._unlogged = [0, 0]  # refused, dropped since the last failure line
        self._last_commit: float | None = None
        self._busy_since: float | None = None
        self._last_error: str | None = None
        self._key_noted = False
        self._head = store.head(db.conn, log_id)
        self._cp_seq, self._cp_time = -1, 0.0
        self._backlog = False  # records were queued when the last commit ended: the log is under load
        self._last_batch = 1
        self._hurry = threading.Event()
        self._nonces = NoncePool()

    # -- called from any thread -------------------------------------------------------------
    def submit(self, item: Item | Stop) -> None:
        if isinstance(item, Item):
            with self._count_lock:
                self._submitted += 1
        self._queue.put(item)

    def submit_batch(self, items: list[Item]) -> None:
        """Queue several records as one entry: one put, at most one wake-up of this thread."""
        with self._count_lock:
            self._submitted += len(items)
        self._queue.put(items)

    def hurry(self) -> None:
        """End the current group-commit window now (no further record is expected soon)."""
        if not self._hurry.is_set():  # set() takes the condition's lock and notifies: once is enough
            self._hurry.set()

    def stats(self) -> AuditStats:
        busy = self._busy_since
        return AuditStats(
            records_written=self._written, records_pending=self._submitted - self._settled,
            last_commit_monotonic=self._last_commit,
            writer_lag_seconds=0.0 if busy is None else max(0.0, time.monotonic() - busy),
            commits=self._commits, last_checkpoint_seq=self._cp_seq,
            healthy=self.is_alive() and self._last_error is None, last_error=self._last_error,
            records_dropped=self._dropped, commit_failures=self._failures,
        )

    # -- writer thread ------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Sign the head this writer last saw (also called once from open(), before start())."""
        seq, head = self._head
        checkpoints.append(self._config.checkpoint_path, checkpoints.make(
            self._signing_key, "checkpoint", self._log_id, seq, head, time.time_ns()))
        self._cp_seq, self._cp_time = seq, time.monotonic()

    def run(self) -> None:
        name_os_thread(self.name)
        defer_to_event_loop()  # handed records by the loop, it must not preempt it on a shared core
        stop: Stop | None = None
        while stop is None:
            batch, stop = self._collect()
            if batch:
                self._commit(batch)
            self._maybe_checkpoint(force=stop is not None)
        self._db.close()
        wake([stop])

    def _checkpoint_wait(self) -> float | None:
        probe = PROBE_INTERVAL_S if self._last_error is not None else None
        if self._head[0] == self._cp_seq:
            return probe
        wait = max(0.0, self._cp_time + self._config.checkpoint_interval_s - time.monotonic())
        return wait if probe is None else min(wait, probe)

    def _probe(self) -> None:
        """One small committed write (not a record): success means the cause of the last failure
        has gone and readiness may turn true again without waiting for traffic."""
        try:
            self._db.conn.execute("INSERT OR REPLACE INTO meta VALUES ('writer_probe', ?)",
                                  (format_time(time.time_ns()),))
        except Exception as exc:
            self._last_error = f"audit commit failed: {exc}"
            return
        _log.warning("audit log writable again after: %s", self._last_error)
        self._last_error = None

    def _collect(self) -> tuple[list[Item], Stop | None]:
        try:
            first = self._queue.get(timeout=self._checkpoint_wait())
        except queue.Empty:
            if self._last_error is not None:
                self._probe()
            return [], None
        if isinstance(first, Stop):
            return [], first
        batch = first if isinstance(first, list) else [first]
        if not batch:
            return [], None
        self._busy_since = batch[0].enqueued
        # Under load (records were already waiting when the last commit ended), sleep out the
        # group-commit window, then take what arrived: one fsync for all of them. Waiting on the
        # queue instead would wake this thread (and take the GIL from the event loop) once per
        # hand-over. At light load a record is committed at once, without the window's latency.
        # The window ends early when an appender says nobody else is coming (``hurry``). When no
        # record of the first hand-over is awaited (relaxed mode, lifecycle events), nobody is
        # kept waiting by the window: it is always held, so commits carry many records each.
        remaining = batch[0].enqueued + self._config.group_commit_s - time.monotonic()
        if remaining > 0 and (self._backlog or self._last_batch > 1
                              or all(item.future is None for item in batch)):
            self._hurry.wait(remaining)
        self._hurry.clear()
        stop: Stop | None = None
        while len(batch) < _MAX_BATCH:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(entry, Stop):
                stop = entry
                break
            if isinstance(entry, list):
                batch.extend(entry)
            else:
                batch.append(entry)
        self._last_batch = len(batch)
        return batch, stop

    def _prepare(self, batch: list[Item]) -> tuple[list[Item], list[Prepared]]:
        ready, prepared = [], []
        for item in batch:
            try:
                prepared.append(prepare(item.record, item.time_ns))
                ready.append(item)
            except Exception as exc:  # one bad record must not sink the batch
                _log.error("audit record refused: %s", exc)
                self._settled += 1
                self._dropped += item.future is None
                wake([item], f"audit record refused: {exc}")
        return ready, prepared

    def _commit(self, batch: list[Item]) -> None:
        try:
            self._write(batch)
        finally:
            self._backlog = self._queue.qsize() > 0

    def _write(self, batch: list[Item]) -> None:
        ready, prepared = self._prepare(batch)
        if not prepared:
            self._busy_since = None
            return
        conn = self._db.conn
        seq, prev = self._head
        try:
            rows = seal_chain(prepared, seq, prev, self._keyring, self._nonces.take(len(prepared)))
            if not (self._key_noted and store.append_after(conn, rows, prev)):
                rows = self._write_locked(conn, prepared)
        except Exception as exc:
            self._fail(ready, f"audit commit failed: {exc}")
            return
        finally:
            self._busy_since = None
        self._key_noted = True
        self._head = (rows[-1][0], rows[-1][-1])
        self._written += len(ready)
        self._settled += len(ready)
        self._commits += 1
        self._last_commit = time.monotonic()
        self._last_error = None
        wake(ready)

    def _fail(self, ready: list[Item], error: str) -> None:
        """A failed commit: awaited records fail their requests (503); the others are dropped,
        and the log line and ``records_dropped`` say how many, never silently."""
        dropped = sum(1 for item in ready if item.future is None)
        self._last_error = error
        self._failures += 1
        self._dropped += dropped
        self._settled += len(ready)
        self._unlogged[0] += len(ready) - dropped
        self._unlogged[1] += dropped
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:  # a line per commit would flood the log
            _log.error("%s (%d records refused to their requests, %d dropped since the last such line; "
                       "%d dropped since start)", error, *self._unlogged, self._dropped)
            self._failure_logged, self._unlogged = now, [0, 0]
        wake(ready, error)

    def _write_locked(self, conn: sqlite3.Connection, prepared: list[Prepared]) -> list[tuple[Any, ...]]:
        """The slow path: chain onto the head read inside a write transaction (the first commit,
        a batch too big for one statement, or a head another process moved). Fresh nonces: one
        already used with other associated data must never be used again."""
        with store.immediate(conn):
            seq, prev = store.head(conn, self._log_id)
            rows = seal_chain(prepared, seq, prev, self._keyring, self._nonces.take(len(prepared)))
            if not self._key_noted:
                store.note_key(conn, self._keyring.active_id, rows[0][0], format_time(rows[0][1] * 1000))
            store.insert_rows(conn, rows)
        return rows

    def _maybe_checkpoint(self, *, force: bool) -> None:
        seq = self._head[0]
        if seq == self._cp_seq:
            return
        due = (force or seq - self._cp_seq >= self._config.checkpoint_every
               or time.monotonic() - self._cp_time >= self._config.checkpoint_interval_s)
        if not due:
            return
        try:
            self.checkpoint()
        except Exception as exc:  # the thread must outlive a full disk: records still flow
            self._last_error = f"audit checkpoint failed: {exc}"
            _log.error("%s", self._last_error)
