"""Signed checkpoints: Ed25519 over (log id, kind, seq, head hash, time), one JSON line each.

They live beside the database (``audit.checkpoints.jsonl``) and are meant to be copied away
(``appliance audit checkpoints``), like Certificate Transparency signed tree heads or CloudTrail
digest files: whoever rewrites or truncates the database cannot produce a matching signature
without the signing key, so dropped newest rows and rewritten chains both show. ``kind`` is
``checkpoint`` (a periodic head) or ``anchor`` (the last row removed by a purge: the remaining
chain may start there only if the signing-key holder said so).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.audit.keys import public_key_hex
from appliance.audit.sealing import format_time

KINDS = ("checkpoint", "anchor")
#: Appends (the writer thread) and a prune's rewrite (retention, another thread) take turns, so
#: no line appended meanwhile is lost with the rewrite.
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    kind: str
    log_id: str
    seq: int
    head: str
    time: str
    public_key: str
    signature: str

    def message(self) -> bytes:
        return signed_message(self.kind, self.log_id, self.seq, self.head, self.time)

    def signature_ok(self, trusted_public_key: str) -> bool:
        """True when signed by ``trusted_public_key`` (hex); the line's own key is not trusted."""
        if self.public_key != trusted_public_key:
            return False
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(trusted_public_key))
            key.verify(bytes.fromhex(self.signature), self.message())
        except (InvalidSignature, ValueError):
            return False
        return True


def signed_message(kind: str, log: str, seq: int, head: str, time: str) -> bytes:
    return f"appliance-audit-checkpoint-v1\n{kind}\n{log}\n{seq}\n{head}\n{time}".encode()


def checkpoints_path(database: Path) -> Path:
    return database.with_name(f"{database.stem}.checkpoints.jsonl")


def make(key: Ed25519PrivateKey, kind: str, log: str, seq: int, head: bytes, now_ns: int) -> Checkpoint:
    time = format_time(now_ns)
    signature = key.sign(signed_message(kind, log, seq, head.hex(), time)).hex()
    return Checkpoint(kind, log, seq, head.hex(), time, public_key_hex(key), signature)


def append(path: Path, checkpoint: Checkpoint) -> None:
    """One ``write`` with O_APPEND (atomic between processes on a local file system), then fsync."""
    line = orjson.dumps(asdict(checkpoint)) + b"\n"
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def prune(path: Path, anchor_seq: int) -> int:
    """Drop the lines for seqs before the purge anchor (they vouch for rows that are gone); keep
    the anchor's own line and everything after. Written to a temporary file, fsync'd, renamed."""
    with _lock:
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        kept = [line for line in lines if (cp := _parse(line)) is None or cp.seq >= anchor_seq]
        if len(kept) == len(lines):
            return 0
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, b"".join(kept))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    return len(lines) - len(kept)


def repair_tail(path: Path) -> None:
    """Drop a torn last line left by a crash mid-write, so later lines stay parseable."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return
    with handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        start = max(0, end - 65536)
        handle.seek(start)
        cut = handle.read().rfind(b"\n")
        handle.truncate(start + cut + 1 if cut >= 0 else start)
        os.fsync(handle.fileno())


def read_tail(path: Path, size: int = 8192) -> list[Checkpoint]:
    """The checkpoints in the last ``size`` bytes (enough to learn who signed lately)."""
    try:
        with path.open("rb") as handle:
            start = max(0, handle.seek(0, os.SEEK_END) - size)
            handle.seek(start)
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    if start > 0:
        lines = lines[1:]  # the first line is cut
    return [cp for cp in map(_parse, lines) if cp is not None]


def _parse(line: bytes) -> Checkpoint | None:
    try:
        checkpoint = Checkpoint(**orjson.loads(line))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
    if checkpoint.kind not in KINDS or not isinstance(checkpoint.seq, int):
        return None
    return checkpoint


def read(path: Path) -> tuple[list[Checkpoint], list[str]]:
    """The parseable checkpoints and one message per line that is not one."""
    found, bad = [], []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        checkpoint = _parse(line)
        if checkpoint is None:
            bad.append(f"{path.name} line {number} is not a checkpoint")
        else:
            found.append(checkpoint)
    return found, bad
