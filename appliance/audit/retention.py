"""``appliance audit purge``: drop old records and keep the rest verifiable.

The last purged row's seq and hash stay behind as the *anchor* the remaining chain starts from,
and that anchor is signed (a checkpoint of kind ``anchor``) before anything is deleted: only the
signing-key holder can shorten the log from the front, and verify tells a purge from a deletion.
Purge refuses a log that does not verify, so it cannot erase the evidence of tampering.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.audit import checkpoints, store
from appliance.audit.keys import public_key_hex
from appliance.audit.log import AuditLog, audit_paths, load_keys
from appliance.audit.model import AuditError, AuditRecord
from appliance.audit.sealing import format_time
from appliance.audit.verify import verify
from appliance.config import Settings


@dataclass(frozen=True, slots=True)
class PurgeResult:
    purged: int
    anchor_seq: int | None


def _cut(conn: sqlite3.Connection, before: str) -> int | None:
    """The last seq to purge: every row before the first one at or after ``before``."""
    first_kept = conn.execute("SELECT MIN(seq) FROM records WHERE time >= ?", (before,)).fetchone()[0]
    cut = first_kept - 1 if first_kept is not None else conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]
    mark = store.anchor(conn)
    floor = mark.seq if mark else 0
    return cut if cut is not None and cut > floor else None


def purge(settings: Settings, before: str, env: Mapping[str, str] | None = None) -> PurgeResult:
    """Delete records older than ``before`` (stored time format), sign the anchor, log the purge."""
    keyring, signing = load_keys(settings, env)
    paths = audit_paths(settings)
    report = verify(paths.database, paths.checkpoints, public_key_hex(signing), keyring)
    if not report.ok:
        raise AuditError(f"the audit log does not verify ({report.first_problem}); not purging")
    db = store.connect(paths.database, create=False)
    try:
        conn = db.conn
        conn.execute("PRAGMA secure_delete = ON")  # overwrite freed pages, not just unlink them
        with store.immediate(conn):
            cut = _cut(conn, before)
            if cut is None:
                return PurgeResult(0, None)
            digest, when = conn.execute("SELECT row_hash, time FROM records WHERE seq = ?", (cut,)).fetchone()
            checkpoints.append(paths.checkpoints, checkpoints.make(
                signing, "anchor", store.log_id(db), cut, digest, time.time_ns()))
            purged = conn.execute("DELETE FROM records WHERE seq <= ?", (cut,)).rowcount
            previous = store.anchor(conn)
            total = purged + (previous.purged_rows if previous else 0)
            conn.execute("INSERT OR REPLACE INTO anchor VALUES (1, ?, ?, ?, ?, ?)",
                         (cut, digest, when, total, format_time(time.time_ns())))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    log = AuditLog.open(settings, env)
    log.append_nowait(AuditRecord("purge", detail=f"purged {purged} records up to seq {cut} "
                                                  f"(before {before})"))
    log.close()
    return PurgeResult(purged, cut)
