"""The audit database: connection settings, the versioned schema and the queries the log needs.

Schema changes are named migrations recorded in the ``migrations`` table (the sqlite-utils
habit), applied in one transaction at open; a database carrying a migration this code does not
know comes from a newer release and is refused rather than misread.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.audit.model import AuditError
from appliance.audit.sealing import COLUMNS, genesis_hash, row_hash

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
        pk="seq", not_null=set(COLUMNS) - {"seq"}, strict=True,
    )
    db.table("records").create_index(["time"])
    # Which key ids the log has used (ids only): a keyring missing one of them is the wrong keyring.
    db.table("keys").create({"key_id": str, "first_seq": int, "first_time": str}, pk="key_id", strict=True)
    # The last purged row: the chain of the remaining rows starts from its hash.
    db.table("anchor").create({"id": int, "seq": int, "row_hash": bytes, "time": str, "purged_rows": int,
                         "purged_at": str}, pk="id", strict=True)


MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("0001_initial", _m0001_initial),
)


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
    """
    if not create and not path.exists():
        raise AuditError(f"no audit database at {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.row_factory = sqlite3.Row
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        _migrate(db, apply=create)
    except sqlite3.Error as exc:
        raise AuditError(f"audit database {path}: {exc}") from exc
    return db


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
    row = conn.execute("SELECT seq, row_hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    if row:
        return int(row[0]), bytes(row[1])
    mark = anchor(conn)
    return (mark.seq, mark.row_hash) if mark else (0, genesis_hash(log))


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


def last_row(conn: sqlite3.Connection) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    return row


def iter_rows(conn: sqlite3.Connection, since: str | None = None,
              until: str | None = None) -> Iterator[sqlite3.Row]:
    """Rows in seq order, optionally limited to ``since <= time < until``."""
    clauses, params = [], []
    if since:
        clauses.append("time >= ?")
        params.append(since)
    if until:
        clauses.append("time < ?")
        params.append(until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    yield from conn.execute(f"SELECT * FROM records {where} ORDER BY seq", params)


def recomputed_hash(row: sqlite3.Row) -> bytes:
    return row_hash([row[name] for name in COLUMNS[:-1]])
