"""Format-1 rows (before issue 20), kept readable and verifiable exactly as they were written.

Migration ``0002_compact_records`` renames their table to ``records_v1`` rather than rewriting
them: a rewritten row would have a new hash, and the signed checkpoints (perhaps copied off the
host) vouch for the old ones. Format 1 stored time as text, the key id as hex text, latency as a
float, the previous hash in every row, and a JSON header (hex digests) as plaintext.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson

#: Stored columns of format 1 in hashing order; ``row_hash`` (last) covers all the others.
COLUMNS = ("seq", "time", "action", "model", "version", "status", "latency_ms", "cache_hit", "device",
           "key_id", "nonce", "ciphertext", "prev_hash", "row_hash")
_HASH_DOMAIN = b"appliance-audit-row-v1"


def row_hash(row: Mapping[str, Any]) -> bytes:
    """Format 1's row hash over the stored values, each type-normalised and length-prefixed."""
    parts = [_HASH_DOMAIN]
    for name in COLUMNS[:-1]:
        value = row[name]
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, float):
            data = value.hex().encode()
        else:
            data = str(value).encode("utf-8")
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return hashlib.sha256(b"".join(parts)).digest()


def stored_row(row: sqlite3.Row) -> dict[str, Any]:
    """A ``records_v1`` row as readers see every row (see ``sealing.stored_row``)."""
    out = {name: row[name] for name in COLUMNS}
    out["format"] = 1
    return out


def decode(plain: bytes) -> dict[str, Any]:
    """Fields of a format-1 plaintext: a length-prefixed JSON header, then the payload."""
    size = int.from_bytes(plain[:4], "big")
    header: dict[str, Any] = orjson.loads(plain[4:4 + size])
    header["payload"] = plain[4 + size:] or None
    return header
