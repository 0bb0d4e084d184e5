"""``appliance audit verify``: walk the chain, check every link, hash, seal and signed checkpoint.

What each finding means:

* ``missing``    — sequence numbers are absent (rows deleted);
* ``reordered``  — a row's previous hash is the hash of a row stored elsewhere (rows swapped);
* ``modified``   — stored values do not match the row hash, the ciphertext does not authenticate,
  a link is broken, or the chain at a signed seq differs from the signature (rewritten with a
  recomputed chain by someone without the signing key);
* ``truncated``  — a signed checkpoint names a seq past the end of the log (newest rows dropped);
* ``bad-signature`` / ``bad-checkpoint`` / ``fork`` / ``unsigned-anchor`` — the checkpoints
  themselves are forged, unreadable, contradictory, or a purge anchor nobody signed.

Rows after the newest checkpoint are covered by the chain only: dropping them is undetectable
until the next checkpoint, which ``audit.checkpoint_every`` and ``checkpoint_interval_s`` bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.audit import checkpoints, store
from appliance.audit.keys import Keyring
from appliance.audit.model import AuditKeyError
from appliance.audit.sealing import SealError, genesis_hash, recomputed_hash, unseal

Row = Mapping[str, Any]
#: How far from its place verify looks for where a row of format 2 came from (diagnosis only).
_REORDER_WINDOW = 32


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


@dataclass(slots=True)
class Report:
    rows: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    checkpoints: int = 0
    last_signed_seq: int | None = None
    decrypted: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None


@dataclass(slots=True)
class _Signed:
    heads: dict[int, set[bytes]] = field(default_factory=dict)
    anchors: set[tuple[int, bytes]] = field(default_factory=set)


def _load_signed(path: Path, log: str, public_key: str, report: Report) -> _Signed:
    found, unreadable = checkpoints.read(path)
    report.problems.extend(Problem(0, "bad-checkpoint", message) for message in unreadable)
    signed = _Signed()
    for cp in found:
        if cp.log_id != log:
            report.problems.append(Problem(cp.seq, "bad-checkpoint", f"checkpoint of another log ({cp.log_id})"))
        elif not cp.signature_ok(public_key):
            report.problems.append(Problem(cp.seq, "bad-signature",
                                           f"checkpoint at seq {cp.seq} ({cp.time}) is not signed by the "
                                           f"trusted key {public_key[:16]}…"))
        else:
            head = bytes.fromhex(cp.head)
            signed.heads.setdefault(cp.seq, set()).add(head)
            if cp.kind == "anchor":
                signed.anchors.add((cp.seq, head))
            report.checkpoints += 1
    for seq, heads in signed.heads.items():
        if len(heads) > 1:
            report.problems.append(Problem(seq, "fork", f"signed checkpoints disagree on the head at seq {seq}"))
    return signed


def _start(conn: sqlite3.Connection, log: str, signed: _Signed, report: Report) -> tuple[int, bytes]:
    mark = store.anchor(conn)
    if mark is None:
        return 0, genesis_hash(log)
    if (mark.seq, mark.row_hash) not in signed.anchors:
        report.problems.append(Problem(mark.seq + 1, "unsigned-anchor",
                                       f"the chain starts after seq {mark.seq}, but no signed purge anchor "
                                       f"says so (oldest rows deleted?)"))
    report.notes.append(f"{mark.purged_rows} rows up to seq {mark.seq} were purged")
    return mark.seq, mark.row_hash


def _link_problem(conn: sqlite3.Connection, row: Row) -> Problem:
    seq = row["seq"]
    other = None
    for table in ("records_v1", "records"):
        other = other or conn.execute(f"SELECT seq FROM {table} WHERE row_hash = ?", (row["prev_hash"],)).fetchone()
    if other is not None and other[0] != seq - 1:
        return Problem(seq, "reordered", f"the row stored at seq {seq} follows the row stored at seq "
                                         f"{other[0]}, not seq {seq - 1} (rows swapped or moved)")
    return Problem(seq, "modified", f"previous hash does not match seq {seq - 1}: one of the two rows "
                                    f"was replaced")


def _hash_problem(conn: sqlite3.Connection, row: Row) -> Problem:
    """A format-2 row stores no previous hash, so a moved row shows as a hash mismatch: look
    nearby for the (seq, previous row) under which its hash holds, to tell a move from an edit."""
    seq = row["seq"]
    if row["format"] == 2:
        near = conn.execute("SELECT seq, row_hash FROM records WHERE seq BETWEEN ? AND ?",
                            (seq - _REORDER_WINDOW, seq + _REORDER_WINDOW)).fetchall()
        for origin in range(seq - _REORDER_WINDOW, seq + _REORDER_WINDOW + 1):
            for other_seq, other_hash in near:
                if other_seq != seq and recomputed_hash({**row, "seq": origin, "prev_hash": other_hash}) \
                        == row["row_hash"] and (origin, other_seq) != (seq, seq - 1):
                    return Problem(seq, "reordered", f"the row stored at seq {seq} follows the row stored at "
                                                     f"seq {other_seq}, not seq {seq - 1} (rows swapped or moved)")
    return Problem(seq, "modified", "stored values do not match the row hash")


def _check_row(conn: sqlite3.Connection, row: Row, expected: int, prev_hash: bytes,
               keyring: Keyring | None) -> Problem | None:
    seq = row["seq"]
    if seq != expected:
        span = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
        return Problem(expected, "missing", f"{span} missing (rows deleted)")
    if row["prev_hash"] != prev_hash:
        return _link_problem(conn, row)
    if recomputed_hash(row) != row["row_hash"]:
        return _hash_problem(conn, row)
    if keyring is not None:
        try:
            unseal(row, keyring)
        except SealError:
            return Problem(seq, "modified", "ciphertext does not authenticate under its seq, key id and "
                                            "previous hash")
        except AuditKeyError as exc:
            return Problem(seq, "unknown-key", str(exc))
    return None


def _walk(conn: sqlite3.Connection, start: tuple[int, bytes], signed: _Signed, keyring: Keyring | None,
          report: Report, upto: int | None = None) -> bool:
    """Check every row in order (up to seq ``upto``); False at the first problem (what follows
    cannot be trusted)."""
    prev_seq, prev_hash = start
    last_good_cp = prev_seq
    for row in store.iter_rows(conn):
        if upto is not None and row["seq"] > upto:
            break
        problem = _check_row(conn, row, prev_seq + 1, prev_hash, keyring)
        seq, digest = row["seq"], row["row_hash"]
        heads = signed.heads.get(seq)
        if problem is None and heads is not None and digest not in heads:
            problem = Problem(seq, "modified", f"the chain at seq {seq} differs from its signed checkpoint: "
                                               f"rows after seq {last_good_cp} were rewritten")
        if problem is not None:
            report.problems.append(problem)
            return False
        if heads is not None:
            last_good_cp = seq
            report.last_signed_seq = seq
        if report.first_seq is None:
            report.first_seq = seq
        report.rows += 1
        prev_seq, prev_hash = seq, digest
    report.last_seq = prev_seq
    return True


def _check_ends(start: tuple[int, bytes], signed: _Signed, report: Report) -> None:
    heads = signed.heads.get(start[0])
    if heads is not None and start[1] not in heads and start[0] > 0:
        report.problems.append(Problem(start[0], "modified", "the purge anchor differs from its checkpoint"))
    beyond = [seq for seq in signed.heads if seq > report.last_seq]
    if beyond:
        report.problems.append(Problem(report.last_seq + 1, "truncated",
                                       f"a signed checkpoint covers seq {max(beyond)}, but the log ends at "
                                       f"seq {report.last_seq} (newest rows deleted)"))
    if not signed.heads and report.rows:
        report.problems.append(Problem(report.first_seq or 1, "truncated",
                                       "no valid signed checkpoint: truncation cannot be ruled out "
                                       "(checkpoint file deleted?)"))
    unsigned = report.last_seq - (report.last_signed_seq or start[0])
    if unsigned > 0 and report.ok:
        report.notes.append(f"{unsigned} newest rows are not yet covered by a signed checkpoint")


def verify(database: Path, checkpoint_file: Path, public_key: str, keyring: Keyring | None,
           upto: int | None = None) -> Report:
    """Check the log; ``keyring`` (optional) also authenticates every ciphertext. ``upto``: check
    only the oldest rows, through that seq (what a purge is about to delete), not the log's end."""
    db = store.connect(database, create=False)
    try:
        report = Report(decrypted=keyring is not None)
        log = store.log_id(db)
        signed = _load_signed(checkpoint_file, log, public_key, report)
        start = _start(db.conn, log, signed, report)
        if _walk(db.conn, start, signed, keyring, report, upto) and upto is None:
            _check_ends(start, signed, report)
        return report
    finally:
        db.close()
