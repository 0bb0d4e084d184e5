"""Purging old records while keeping the rest verifiable (``appliance audit purge`` and the
server's own retention, ``upkeep``).

The last purged row's seq and hash stay behind as the *anchor* the remaining chain starts from,
and that anchor is signed (a checkpoint of kind ``anchor``) before anything is deleted: only the
signing-key holder can shorten the log from the front, and verify tells a purge from a deletion.
A purge refuses rows that do not verify, so it cannot erase the evidence of tampering. Afterwards
the freed pages go back to the file system (incremental vacuum, WAL truncated) and the checkpoint
lines older than the anchor are dropped: they vouch for rows that no longer exist.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit import checkpoints, store
from appliance.audit.keys import Keyring, public_key_hex
from appliance.audit.log import AuditLog, audit_paths, load_keys
from appliance.audit.model import AuditError, AuditRecord
from appliance.audit.sealing import format_time
from appliance.audit.verify import verify
from appliance.config import Settings

#: Rows deleted per transaction: the server's writer waits for the lock at most this long.
CHUNK_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class PurgeResult:
    purged: int
    anchor_seq: int | None


def cut_before(conn: sqlite3.Connection, before: str) -> int | None:
    """The last seq to purge: every row before the first one at or after ``before``."""
    first_kept = store.first_seq_from(conn, before)
    span = store.seq_span(conn)
    if span is None:
        return None
    cut = first_kept - 1 if first_kept is not None else span[1]
    return cut if cut >= span[0] else None


def check_before_purge(database: Path, checkpoint_file: Path, signing: Ed25519PrivateKey,
                       keyring: Keyring | None, cut: int | None = None) -> None:
    """AuditError unless the rows through ``cut`` (all rows when None) verify."""
    report = verify(database, checkpoint_file, public_key_hex(signing), keyring, upto=cut)
    if not report.ok:
        raise AuditError(f"the audit log does not verify ({report.first_problem}); not purging")


def purge_through(database: Path, checkpoint_file: Path, signing: Ed25519PrivateKey, cut: int) -> int:
    """Delete the rows up to seq ``cut`` (signed anchor first, a chunk per transaction), then give
    the space back. The caller has checked those rows (``check_before_purge``)."""
    db = store.connect(database, create=False)
    purged = 0
    try:
        conn = db.conn
        conn.execute("PRAGMA secure_delete = ON")  # overwrite freed pages, not just unlink them
        log = store.log_id(db)
        while True:
            span = store.seq_span(conn)
            if span is None or span[0] > cut:
                break
            purged += _purge_chunk(conn, checkpoint_file, signing, log, min(cut, span[0] + CHUNK_ROWS - 1))
        # executescript steps the pragma to the end; execute() steps once and frees a single page
        conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mark = store.anchor(conn)
    finally:
        db.close()
    if mark is not None:
        checkpoints.prune(checkpoint_file, mark.seq)
    return purged


def _purge_chunk(conn: sqlite3.Connection, checkpoint_file: Path, signing: Ed25519PrivateKey, log: str,
                 cut: int) -> int:
    with store.immediate(conn):
        digest, when = store.hash_at(conn, cut), store.time_at(conn, cut)
        if digest is None or when is None:
            raise AuditError(f"seq {cut} is not in the audit log; not purging")
        checkpoints.append(checkpoint_file, checkpoints.make(signing, "anchor", log, cut, digest, time.time_ns()))
        purged = store.delete_through(conn, cut)
        previous = store.anchor(conn)
        total = purged + (previous.purged_rows if previous else 0)
        conn.execute("INSERT OR REPLACE INTO anchor VALUES (1, ?, ?, ?, ?, ?)",
                     (cut, digest, when, total, format_time(time.time_ns())))
    return purged


def purge(settings: Settings, before: str, env: Mapping[str, str] | None = None) -> PurgeResult:
    """Delete records older than ``before`` (stored time format), sign the anchor, log the purge."""
    keyring, signing = load_keys(settings, env)
    paths = audit_paths(settings)
    check_before_purge(paths.database, paths.checkpoints, signing, keyring)
    db = store.connect(paths.database, create=False)
    try:
        cut = cut_before(db.conn, before)
    finally:
        db.close()
    if cut is None:
        return PurgeResult(0, None)
    purged = purge_through(paths.database, paths.checkpoints, signing, cut)
    log = AuditLog.open(settings, env)
    log.append_nowait(AuditRecord("purge", detail=f"purged {purged} records up to seq {cut} "
                                                  f"(before {before})"))
    log.close()
    return PurgeResult(purged, cut)
