"""A damaged audit database is found at start and moved aside, never written over.

SQLite reports most damage itself (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) once a damaged page is
read. A file cut short (a full disk during a copy, a bad restore) can open cleanly and fail only
when its last pages are read, so the header's page count is compared with the file's size first.
That comparison is skipped while a WAL file holds frames: a crash during a checkpoint can leave
the database file shorter than its header says, and the WAL still completes it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from appliance.audit.model import AuditError

_MAGIC = b"SQLite format 3\x00"
_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class AuditCorruptError(AuditError):
    """The audit database is damaged; the message says where it was moved and what to do."""


def check_file(path: Path) -> None:
    """AuditCorruptError when ``path`` is not an SQLite file or is shorter than its header says."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise AuditCorruptError("not an SQLite database (bad header)")
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    if header[24:28] != header[92:96]:
        return  # "in-header database size" not valid (written by an SQLite before 3.7.0): no claim to check
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and size < pages * page_size:
        raise AuditCorruptError(f"the file is cut short: {size:,} bytes where its header counts "
                                f"{pages:,} pages of {page_size:,} bytes")


def is_damage(exc: BaseException) -> bool:
    return isinstance(exc, AuditCorruptError) or (
        isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) in _DAMAGE_CODES)


def quarantine(path: Path) -> list[Path]:
    """Rename the database, its WAL and shared-memory files and its checkpoint file aside with one
    suffix, so the evidence stays together and a restart begins a new log beside it."""
    from appliance.audit.checkpoints import checkpoints_path

    suffix = time.strftime(".corrupt-%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for source in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
                   checkpoints_path(path)):
        if source.exists():
            target = source.with_name(source.name + suffix)
            os.rename(source, target)
            moved.append(target)
    return moved


def failure(path: Path, exc: BaseException, *, move_aside: bool) -> AuditError:
    """The error to raise for ``exc`` met while opening ``path``: damage moves the files aside
    first (with ``move_aside``) and says so; anything else is a plain AuditError."""
    if not is_damage(exc):
        return AuditError(f"audit database {path}: {exc}")
    reason = str(exc)
    if not move_aside:
        return AuditCorruptError(f"audit database {path} is damaged ({reason})")
    moved = quarantine(path)
    return AuditCorruptError(
        f"audit database {path} is damaged ({reason}); moved aside, nothing overwritten: "
        f"{', '.join(str(p) for p in moved)}. Keep those files as evidence (`sqlite3 FILE .recover` "
        f"salvages rows); the next start begins a new audit log")
