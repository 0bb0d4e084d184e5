"""The audit database: connection settings, the versioned schema and the queries the log needs.

Schema changes are named migrations recorded in the ``migrations`` table (the sqlite-utils
habit), applied in one transaction at open; a database carrying a migration this code does not
know comes from a newer release and is refused rather than misread.

Rows live in two tables: ``records_v1`` (format 1, read-only since ``0002_compact_records``) and
``records`` (format 2, see ``sealing``); every seq of the first is below every seq of the second,
and readers see one sequence of rows in one shape (``iter_rows``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.audit import integrity, legacy
from appliance.audit.model import AuditError
from appliance.audit.sealing import COLUMNS, format_time, genesis_hash, stored_row

_log = logging.getLogger(__name__)
_ROW_PLACEHOLDERS = f"({', '.join('?' * len(COLUMNS))})"
#: Rows per INSERT statement: SQLite allows 32,766 bound parameters per statement.
_ROWS_PER_STATEMENT = 1024


def _m0001_initial(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", strict=True)
    db.table("meta").insert({"key": "log_id", "value": secrets.token_hex(16)})
    db.table("records").create(
        {"seq": int, "time": str, "action": str, "model": str, "version": str, "status": int,
         "latency_ms": float, "cache_hit": int, "device": str, "key_id": str, "nonce": bytes,
         "ciphertext": bytes, "prev_hash": bytes, "row_hash": bytes},
        pk="seq", not_null=set(legacy.COLUMNS) - {"seq"}, strict=True,
    )
    db.table("records").create_index(["time"])
    # Which key ids the log has used (ids only): a keyring missing one of them is the wrong keyring.
    db.table("keys").create({"key_id": str, "first_seq": int, "first_time": str}, pk="key_id", strict=True)
    # The last purged row: the chain of the remaining rows starts from its hash.
    db.table("anchor").create({"id": int, "seq": int, "row_hash": bytes, "time": str, "purged_rows": int,
                         "purged_at": str}, pk="id", strict=True)


def _m0002_compact_records(db: sqlite_utils.Database) -> None:
    """Format 2 (issue 20): ~half the bytes per record. Format-1 rows keep their table and hashes."""
    db.execute("ALTER TABLE records RENAME TO records_v1")
    db.execute("""CREATE TABLE records (
        seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, action TEXT NOT NULL, model TEXT NOT NULL,
        version TEXT NOT NULL, status INTEGER NOT NULL, latency_us INTEGER NOT NULL,
        cache_hit INTEGER NOT NULL, device TEXT NOT NULL, key_id BLOB NOT NULL, nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL, row_hash BLOB NOT NULL) STRICT""")
    db.execute("CREATE INDEX idx_records_time_us ON records (time_us)")


MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("0001_initial", _m0001_initial),
    ("0002_compact_records", _m0002_compact_records),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    row_hash: bytes
    time: str
    purged_rows: int


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken up front, so concurrent writers queue instead of deadlocking."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect(path: Path, *, durable: bool = True, create: bool = True) -> sqlite_utils.Database:
    """Open (and with ``create``, create and migrate) the database in WAL mode.

    ``durable`` is ``synchronous=FULL``: the WAL is fsync'd at every commit, which is what a
    strict-mode acknowledgement promises. ``NORMAL`` survives a process crash but not power loss.
    A damaged file raises ``AuditCorruptError``; with ``create`` it is first moved aside
    (``integrity.quarantine``) so that nothing ever writes over the evidence.
    """
    if not create and not path.exists():
        raise AuditError(f"no audit database at {path}")
    conn: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        integrity.check_file(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.row_factory = sqlite3.Row
        db = sqlite_utils.Database(conn)
        if create:
            _incremental_vacuum(db)
        db.enable_wal()
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        _migrate(db, apply=create)
        head(conn, "")  # reads the newest pages: a file cut short fails here, not at the first append
    except (sqlite3.Error, integrity.AuditCorruptError) as exc:
        if conn is not None:
            conn.close()
        raise integrity.failure(path, exc, move_aside=create) from exc
    return db


def _incremental_vacuum(db: sqlite_utils.Database) -> None:
    """Let purges give pages back to the file system (``PRAGMA incremental_vacuum``). A new file
    takes the setting at once; an older one needs one ``VACUUM``, done here once."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if not db.table_names():
        return
    try:
        db.execute("VACUUM")  # needs about the file's size free: best effort, the log works without
    except sqlite3.OperationalError as exc:
        _log.warning("audit database %s stays without incremental vacuum (purged pages are reused but "
                     "the file does not shrink): VACUUM failed: %s", db.conn.execute("PRAGMA database_list")
                     .fetchone()[2], exc)


def _migrate(db: sqlite_utils.Database, *, apply: bool) -> None:
    known = [name for name, _ in MIGRATIONS]
    with immediate(db.conn):
        if "migrations" not in db.table_names():
            db.table("migrations").create({"name": str, "applied_at": str}, pk="name", strict=True)
        applied = {row["name"] for row in db.table("migrations").rows}
        newer = applied - set(known)
        if newer:
            raise AuditError(f"audit database has migrations {sorted(newer)} from a newer release")
        for name, step in MIGRATIONS:
            if name in applied:
                continue
            if not apply:
                raise AuditError(f"audit database lacks migration {name}; open it with the server first")
            step(db)
            db.execute("INSERT INTO migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", [name])


def log_id(db: sqlite_utils.Database) -> str:
    return str(db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0])


def anchor(conn: sqlite3.Connection) -> Anchor | None:
    row = conn.execute("SELECT seq, row_hash, time, purged_rows FROM anchor WHERE id = 1").fetchone()
    return Anchor(row[0], row[1], row[2], row[3]) if row else None


def head(conn: sqlite3.Connection, log: str) -> tuple[int, bytes]:
    """(seq, hash) the next row chains from: the last row, else the purge anchor, else genesis."""
    for table in ("records", "records_v1"):
        row = conn.execute(f"SELECT seq, row_hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
        if row:
            return int(row[0]), bytes(row[1])
    mark = anchor(conn)
    return (mark.seq, mark.row_hash) if mark else (0, genesis_hash(log))


def time_us(text: str) -> int:
    """Microseconds since the epoch of a time in the log's text format (``format_time``)."""
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


def hash_at(conn: sqlite3.Connection, seq: int) -> bytes | None:
    """The row hash of ``seq``: a stored row, the purge anchor, or genesis for seq 0."""
    for table in ("records", "records_v1"):
        row = conn.execute(f"SELECT row_hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
        if row:
            return bytes(row[0])
    mark = anchor(conn)
    if mark is not None and mark.seq == seq:
        return mark.row_hash
    if seq == 0:
        return genesis_hash(str(conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]))
    return None


def time_at(conn: sqlite3.Connection, seq: int) -> str | None:
    row = conn.execute("SELECT time_us FROM records WHERE seq = ?", (seq,)).fetchone()
    if row:
        return format_time(row[0] * 1000)
    row = conn.execute("SELECT time FROM records_v1 WHERE seq = ?", (seq,)).fetchone()
    return str(row[0]) if row else None


def first_seq_from(conn: sqlite3.Connection, when: str) -> int | None:
    """The first seq stored at or after ``when`` (text format)."""
    row = conn.execute("SELECT MIN(seq) FROM records_v1 WHERE time >= ?", (when,)).fetchone()
    if row[0] is not None:
        return int(row[0])
    row = conn.execute("SELECT MIN(seq) FROM records WHERE time_us >= ?", (time_us(when),)).fetchone()
    return None if row[0] is None else int(row[0])


def seq_span(conn: sqlite3.Connection) -> tuple[int, int, int] | None:
    """(first seq, last seq, rows) of the stored records, None when there are none."""
    first = last = None
    rows = 0
    for table in ("records_v1", "records"):
        low, high = conn.execute(f"SELECT MIN(seq), MAX(seq) FROM {table}").fetchone()
        if low is not None:
            first = low if first is None else first
            last, rows = high, rows + high - low + 1
    return None if first is None or last is None else (first, last, rows)


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file in use (pages not on the free list); the WAL not included."""
    pages, free, size = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                         for name in ("page_count", "freelist_count", "page_size"))
    return int((pages - free) * size)


def delete_through(conn: sqlite3.Connection, cut: int) -> int:
    """Delete every row up to seq ``cut``; the number deleted."""
    return sum(conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (cut,)).rowcount
               for table in ("records_v1", "records"))


@functools.lru_cache(maxsize=64)
def _insert_sql(count: int) -> str:
    return f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES {', '.join([_ROW_PLACEHOLDERS] * count)}"


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """One multi-row INSERT per 1,024 rows rather than ``executemany``.

    The sqlite3 module releases the GIL around every statement step; ``executemany`` steps once
    per row, and on a busy server each release hands the GIL to the event loop and costs the
    writer a context switch to get it back. One statement is one step.
    """
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start:start + _ROWS_PER_STATEMENT]
        conn.execute(_insert_sql(len(chunk)), list(itertools.chain.from_iterable(chunk)))


@functools.lru_cache(maxsize=64)
def _append_sql(count: int) -> str:
    head = ("COALESCE((SELECT row_hash FROM records ORDER BY seq DESC LIMIT 1), "
            "(SELECT row_hash FROM anchor WHERE id = 1))")
    return (f"INSERT INTO records ({', '.join(COLUMNS)}) SELECT * FROM "
            f"(VALUES {', '.join([_ROW_PLACEHOLDERS] * count)}) WHERE {head} = ?")


def append_after(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], head_hash: bytes) -> bool:
    """Insert ``rows`` in one statement, and so one implicit transaction, if and only if the log's
    head is still ``head_hash``; False (nothing written) when another process appended or the rows
    are too many for one statement. The caller then takes the slow path (:func:`immediate`, re-read
    the head, re-seal).

    One statement is one release of the GIL where BEGIN, SELECT, INSERT and COMMIT are four, and
    on a busy server each release costs the writer a context switch to win the GIL back.
    Must run outside any transaction (autocommit), so that the statement commits itself.
    """
    if not rows or len(rows) > _ROWS_PER_STATEMENT:
        return False
    params = list(itertools.chain.from_iterable(rows))
    params.append(head_hash)
    return conn.execute(_append_sql(len(rows)), params).rowcount == len(rows)


def note_key(conn: sqlite3.Connection, kid: str, first_seq: int, first_time: str) -> None:
    conn.execute("INSERT OR IGNORE INTO keys VALUES (?, ?, ?)", (kid, first_seq, first_time))


def used_keys(conn: sqlite3.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in conn.execute("SELECT key_id, first_seq FROM keys ORDER BY first_seq")}


def last_row(conn: sqlite3.Connection) -> dict[str, Any] | None:
    seq = head(conn, "")[0]
    return next(iter_rows(conn, first=seq), None) if seq else None


def _range(column: str, since: Any, until: Any, first: int | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for clause, value in ((f"{column} >= ?", since), (f"{column} < ?", until), ("seq >= ?", first)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def iter_rows(conn: sqlite3.Connection, since: str | None = None, until: str | None = None,
              first: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows of both formats in seq order, as ``sealing.stored_row`` shapes them, optionally
    limited to ``since <= time < until`` and ``seq >= first``."""
    where, params = _range("time", since, until, first)
    for row in conn.execute(f"SELECT * FROM records_v1 {where} ORDER BY seq", params):
        yield legacy.stored_row(row)
    where, params = _range("time_us", since and time_us(since), until and time_us(until), first)
    prev: bytes | None = None
    for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM records {where} ORDER BY seq", params):
        if prev is None:
            prev = hash_at(conn, row[0] - 1) or b""
        out = stored_row(tuple(row), prev)
        prev = out["row_hash"]
        yield out

