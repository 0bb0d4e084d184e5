"""``AuditLog``: the asyncio-facing handle. It only enqueues; the writer thread does the work."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit import checkpoints, store
from appliance.audit.keys import (
    KEY_FILE,
    SIGNING_KEY_FILE,
    Keyring,
    load_keyring,
    load_signing_key,
    public_key_hex,
    resolve_read_path,
)
from appliance.audit.model import AuditError, AuditHealth, AuditKeyError, AuditRecord, AuditStats
from appliance.audit.writer import Item, Stop, Writer, WriterConfig, wake
from appliance.config import Settings

if TYPE_CHECKING:
    from appliance.audit.remote import RemoteAuditLog
    from appliance.audit.upkeep import Upkeep


@dataclass(frozen=True, slots=True)
class AuditPaths:
    database: Path
    checkpoints: Path


def audit_paths(settings: Settings) -> AuditPaths:
    database = settings.audit.database or settings.server.state_dir / "audit.db"
    return AuditPaths(database, checkpoints.checkpoints_path(database))


def load_keys(settings: Settings, env: Mapping[str, str] | None = None) -> tuple[Keyring, Ed25519PrivateKey]:
    """Both keys, resolved in the documented order; AuditKeyError with the reason otherwise."""
    keyring = load_keyring(resolve_read_path(settings, KEY_FILE, env))
    signing = load_signing_key(resolve_read_path(settings, SIGNING_KEY_FILE, env))
    return keyring, signing


def _check_keys(conn: sqlite3.Connection, keyring: Keyring, database: Path) -> None:
    """The keyring must hold every key id the log was written with: else it is the wrong keyring."""
    used = store.used_keys(conn)
    last = store.last_row(conn)
    if last is not None:
        used.setdefault(last["key_id"], last["seq"])
    missing = {kid: seq for kid, seq in used.items() if kid not in keyring}
    if missing:
        listed = ", ".join(f"{kid} (records from seq {seq})" for kid, seq in missing.items())
        raise AuditKeyError(
            f"audit database {database} was written with key id(s) {listed}, which the keyring "
            f"{keyring.source} (ids {', '.join(keyring.ids)}) does not hold: wrong key file, or a "
            f"rotated-out key was deleted; restore it")


def _check_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    signers = {cp.public_key for cp in checkpoints.read_tail(path)}
    mine = public_key_hex(key)
    if signers and mine not in signers:
        raise AuditKeyError(f"the audit signing key ({mine[:16]}…) is not the key that signed "
                            f"{path} ({', '.join(s[:16] + '…' for s in signers)}): wrong signing key file")


class AuditLog:
    """Append-only, encrypted, hash-chained audit log (see the package docstring)."""

    def __init__(self, writer: Writer, paths: AuditPaths, *, strict: bool) -> None:
        self._writer, self.paths, self.strict = writer, paths, strict
        self._closed = False
        self.waiting = 0  # strict appends awaiting their commit
        # Strict appends of one event-loop iteration, handed to the writer together at its end.
        self._pending: list[Item] = []
        self._pending_flush = False
        self.upkeep: Upkeep | None = None  # the server's retention and capacity checks, when running

    @classmethod
    def open(cls, settings: Settings, env: Mapping[str, str] | None = None) -> AuditLog:
        """Load keys, open and migrate the database, sign its head, start the writer.

        Raises AuditKeyError on a missing or wrong key and AuditError on anything else. It does
        blocking I/O: call it at startup (or through ``asyncio.to_thread``).
        """
        keyring, signing = load_keys(settings, env)
        paths = audit_paths(settings)
        strict = settings.audit.mode == "strict"
        db = store.connect(paths.database, durable=strict)
        try:
            _check_keys(db.conn, keyring, paths.database)
            checkpoints.repair_tail(paths.checkpoints)
            _check_signing_key(paths.checkpoints, signing)
            config = WriterConfig(paths.checkpoints, settings.audit.group_commit_ms / 1000.0,
                                  max(1, settings.audit.checkpoint_every), settings.audit.checkpoint_interval_s)
            writer = Writer(db, store.log_id(db), keyring, signing, config)
            writer.checkpoint()
        except OSError as exc:
            db.close()
            raise AuditError(f"audit checkpoints {paths.checkpoints}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        writer.start()
        return cls(writer, paths, strict=strict)

    @property
    def closed(self) -> bool:
        return self._closed

    def _item(self, record: AuditRecord) -> Item:
        if self._closed:
            raise AuditError("audit log is closed")
        if not self._writer.is_alive():
            raise AuditError("audit writer has stopped")
        return Item(record, time.time_ns(), time.monotonic())

    async def append(self, record: AuditRecord, *, flush: bool = False) -> None:
        """Strict: return once the record's transaction is committed. Relaxed: return at once.

        ``flush``: the caller knows no other record is coming soon (every request in flight is
        waiting on this log), so the writer commits now instead of holding the group open.
        """
        if not self.strict:
            # Nobody waits for the commit: hand the record over with the rest of this loop
            # iteration's, and the writer commits whole windows of them (see Writer._collect).
            item = self._item(record)
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._hand_over)
            self._pending.append(item)
            return
        if self._closed:
            raise AuditError("audit log is closed")
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        item = Item(record, time.time_ns(), 0.0, committed, loop)
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append(item)
        self._pending_flush = self._pending_flush or flush
        self.waiting += 1
        try:
            await committed
        finally:
            self.waiting -= 1

    def _hand_over(self) -> None:
        """End of a loop iteration: one queue put (and at most one wake-up of the writer thread) for
        every record appended during it, instead of a lock, a put and a wake-up per record."""
        batch, self._pending = self._pending, []
        flush, self._pending_flush = self._pending_flush, False
        if not self._writer.is_alive():
            wake(batch, "audit writer has stopped")
            return
        enqueued = time.monotonic()
        for item in batch:
            item.enqueued = enqueued
        self._writer.submit_batch(batch)
        if flush:
            self._writer.hurry()

    def append_nowait(self, record: AuditRecord) -> None:
        """Fire and forget (lifecycle events): never blocks, whatever the mode."""
        self._writer.submit(self._item(record))

    async def aclose(self) -> None:
        """Commit everything queued, sign a final checkpoint, stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._hand_over()
        if self._writer.is_alive():
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            self._writer.submit(Stop(done, loop))
            await done

    def close(self) -> None:
        """Blocking ``aclose`` for code without an event loop (the CLI, scripts)."""
        if self._closed:
            return
        self._closed = True
        self._writer.submit(Stop())
        self._writer.join()

    def stats(self) -> AuditStats:
        stats = self._writer.stats()
        if self._pending:  # appended during this loop iteration, not yet handed to the writer
            stats = dataclasses.replace(stats, records_pending=stats.records_pending + len(self._pending))
        return stats

    def health(self) -> AuditHealth:
        """Can the log commit now? Not ready only in strict mode (see ``AuditHealth``)."""
        if self._closed:
            reason = "audit log is closed"
        elif not self._writer.is_alive():
            reason = "audit writer has stopped"
        else:
            reason = self._writer.stats().last_error or ""
        return AuditHealth(ok=not reason, ready=not reason or not self.strict, reason=reason)


class NullAuditLog:
    """Same interface, records nothing: used when ``audit.enabled = false``."""

    paths = None
    strict = False
    waiting = 0

    async def append(self, record: AuditRecord, *, flush: bool = False) -> None:
        return None

    def append_nowait(self, record: AuditRecord) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        return None

    def stats(self) -> AuditStats:
        return AuditStats(0, 0, None, 0.0, 0, 0, True, None)

    def health(self) -> AuditHealth:
        return AuditHealth(ok=True, ready=True)


def open_audit_log(settings: Settings, env: Mapping[str, str] | None = None, *,
                   writer_socket: Path | None = None) -> AuditLog | RemoteAuditLog | NullAuditLog:
    """The log the server should use: a NullAuditLog only when audit is explicitly disabled.

    ``writer_socket``: this process is one worker of several; the audit writer process listening
    there holds the keys and the database (waits up to 10 s for it, then AuditError).
    """
    if not settings.audit.enabled:
        return NullAuditLog()
    if writer_socket is not None:
        from appliance.audit.remote import RemoteAuditLog

        return RemoteAuditLog.connect(settings, writer_socket)
    return AuditLog.open(settings, env)
