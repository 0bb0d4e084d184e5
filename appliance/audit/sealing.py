"""How one record becomes one stored row: what is sealed, the AEAD, and the chain hash.

Clear columns — seq, time, action, model, version, status, latency, cache_hit, device — are
operational facts: what the appliance did, when, with which model and how fast. Operators need
them to count, filter (``export --since``, ``purge --before``, retention) and alert without holding
the key, and they name neither a person nor the data.

Sealed (AES-256-GCM, one fresh random 96-bit nonce per record; encoding in ``plaintext``):

* principal, client address, request id — identify a person or a session and join other logs;
* input/output SHA-256 and the manifest hash — a hash of a low-entropy input (an age, a yes/no
  form) can be brute-forced back to the input, so it is as sensitive as the input;
* summary — the prediction itself (a class, a score) is personal data in most deployments;
* the route (stable/canary/shadow), detail (free text) and payload (captured inputs/outputs, only
  when the model opts in).

The associated data binds the sequence number, key id and previous hash, so a sealed blob cannot
be moved to another position, relabelled with another key id or spliced into another chain.
The row hash covers every stored column (clear values, key id, nonce, ciphertext) and the previous
row's hash in an unambiguous length-prefixed encoding. Format 2 (issue 20) stores time and latency
as integers (µs), the key id as 8 bytes, and not the previous hash: it is the previous row's
``row_hash``, and readers (``store.iter_rows``) supply it, so every check verify made still holds.
Format-1 rows (``legacy``) stay as they were written. Ciphertext length reveals plaintext length.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from appliance.audit import legacy, plaintext
from appliance.audit.keys import Keyring
from appliance.audit.model import AuditError, AuditRecord
from appliance.system.utctime import utc_second

#: Stored columns of format 2 in hashing order; ``row_hash`` (last) covers the others and the
#: previous row's hash, which is hashed after ``ciphertext`` but not stored.
COLUMNS = ("seq", "time_us", "action", "model", "version", "status", "latency_us", "cache_hit", "device",
           "key_id", "nonce", "ciphertext", "row_hash")
SEALED_FIELDS = ("request_id", "principal", "client", "input_sha256", "output_sha256", "summary",
                 "detail", "manifest_sha256", "route")
_HASH_DOMAIN = b"appliance-audit-row-v2"
_AAD_DOMAIN = b"appliance-audit-aad-v1"
NONCE_BYTES = 12


class SealError(AuditError):
    """A row's ciphertext does not authenticate under its seq, key id and previous hash."""


@dataclass(slots=True)
class Prepared:
    """A record turned into the bytes to seal, before its place in the chain is known.

    ``clear_encoded`` is the row-hash encoding of the clear columns (time … device), done once here
    so that chaining a record only encodes what depends on its position.
    """

    time_us: int
    action: str
    model: str
    version: str
    status: int
    latency_us: int
    cache_hit: int
    device: str
    plaintext: bytes
    clear_encoded: bytes


def format_time(ns: int) -> str:
    """UTC ISO 8601 with microseconds and ``Z`` (how times are shown, and stored by format 1)."""
    secs, rem = divmod(ns, 1_000_000_000)
    return f"{utc_second(secs)}.{rem // 1000:06d}Z"


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


@dataclass(frozen=True, slots=True)
class _Columns:
    """The clear columns that repeat from record to record, cleaned and hash-encoded once."""

    action: str
    model: str
    version: str
    status: int
    cache_hit: int
    device: str
    head: bytes  # row-hash encoding of action, model, version, status (they follow time)
    tail: bytes  # … of cache_hit, device (they follow latency)


_COLUMNS_CACHE: dict[tuple[Any, ...], _Columns] = {}
_COLUMNS_CACHE_SIZE = 4096
_clean = plaintext._clean


def _columns(key: tuple[Any, ...]) -> _Columns:
    found = _COLUMNS_CACHE.get(key)
    if found is not None:
        return found
    action, model, version, status, cache_hit, device = key
    action, model, version, device = _clean(action), _clean(model), _clean(str(version)), _clean(device)
    status, cache_hit = int(status), int(bool(cache_hit))
    # Exactly row_hash()'s encoding: str and int as UTF-8 text, each length-prefixed.
    head = b"".join(_prefixed(str(v).encode()) for v in (action, model, version, status))
    tail = _prefixed(str(cache_hit).encode()) + _prefixed(device.encode())
    columns = _Columns(action, model, version, status, cache_hit, device, head, tail)
    if len(_COLUMNS_CACHE) >= _COLUMNS_CACHE_SIZE:
        _COLUMNS_CACHE.clear()
    _COLUMNS_CACHE[key] = columns
    return columns


def prepare(record: AuditRecord, time_ns: int) -> Prepared:
    """Everything that can fail about a record (encoding), done before it takes a seq."""
    latency = float(record.latency_ms)
    latency_us = round(latency * 1000) if math.isfinite(latency) and abs(latency) < 2**53 / 1000 else -1
    c = _columns((record.action, record.model, record.version, record.status, record.cache_hit, record.device))
    when = time_ns // 1000
    when_text, latency_text = str(when).encode(), str(latency_us).encode()
    clear = b"".join((_prefixed(when_text), c.head, _prefixed(latency_text), c.tail))
    return Prepared(when, c.action, c.model, c.version, c.status, latency_us, c.cache_hit, c.device,
                    plaintext.encode(record), clear)


def associated_data(seq: int, kid: str, prev_hash: bytes) -> bytes:
    return _AAD_DOMAIN + seq.to_bytes(8, "big") + kid.encode("ascii") + prev_hash


def row_hash(values: Sequence[Any], domain: bytes = _HASH_DOMAIN) -> bytes:
    """SHA-256 over the values (format 2: COLUMNS[:-1] then the previous hash), each
    type-normalised and length-prefixed."""
    parts = [domain]
    for value in values:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, float):
            data = value.hex().encode()
        else:
            data = str(value).encode("utf-8")
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return hashlib.sha256(b"".join(parts)).digest()


def genesis_hash(log_id: str) -> bytes:
    """The 'previous hash' of seq 1: unique per database so chains cannot be mixed."""
    return hashlib.sha256(b"appliance-audit-genesis:" + log_id.encode("ascii")).digest()


class NoncePool:
    """Fresh random 96-bit nonces, drawn from ``os.urandom`` 4,096 at a time.

    Each ``os.urandom`` call releases the GIL, which a busy event loop then takes, and the writer
    pays a context switch to get it back: one draw per 4,096 records instead of one per batch.
    Every nonce is handed out once and forgotten; nonces are stored in clear anyway.
    """

    _DRAW = 4096

    def __init__(self) -> None:
        self._pool, self._next = b"", 0

    def take(self, count: int) -> list[bytes]:
        need = count * NONCE_BYTES
        if self._next + need > len(self._pool):
            self._pool, self._next = os.urandom(max(need, self._DRAW * NONCE_BYTES)), 0
        start, self._next = self._next, self._next + need
        pool = self._pool
        return [pool[i:i + NONCE_BYTES] for i in range(start, start + need, NONCE_BYTES)]


def seal(p: Prepared, seq: int, prev_hash: bytes, keyring: Keyring, nonce: bytes | None = None) -> tuple[Any, ...]:
    """The stored row (in COLUMNS order) for ``p`` at position ``seq`` after ``prev_hash``.

    ``nonce``: 12 random bytes never used before (see :class:`NoncePool`); drawn here when omitted.
    """
    kid = keyring.active_id
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    ciphertext = keyring.cipher(kid).encrypt(nonce, p.plaintext, associated_data(seq, kid, prev_hash))
    values = (seq, p.time_us, p.action, p.model, p.version, p.status, p.latency_us, p.cache_hit, p.device,
              bytes.fromhex(kid), nonce, ciphertext)
    return (*values, row_hash((*values, prev_hash)))


def seal_chain(prepared: Sequence[Prepared], seq: int, prev_hash: bytes, keyring: Keyring,
               nonce_list: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """Rows for ``prepared`` chained after (``seq``, ``prev_hash``): :func:`seal` in one tight loop.

    The row hash is built from each record's ``clear_encoded`` plus the columns that depend on its
    position, byte for byte what :func:`row_hash` computes (a test holds the two together).
    """
    kid = keyring.active_id
    encrypt = keyring.cipher(kid).encrypt
    kid_ascii, kid_raw = kid.encode("ascii"), bytes.fromhex(kid)
    kid_encoded = _prefixed(kid_raw)
    sha256 = hashlib.sha256
    rows = []
    for p, nonce in zip(prepared, nonce_list, strict=True):
        seq += 1
        ciphertext = encrypt(nonce, p.plaintext, b"".join((_AAD_DOMAIN, seq.to_bytes(8, "big"), kid_ascii, prev_hash)))
        seq_text = str(seq).encode()
        digest = sha256(b"".join((
            _HASH_DOMAIN, len(seq_text).to_bytes(4, "big"), seq_text, p.clear_encoded, kid_encoded,
            len(nonce).to_bytes(4, "big"), nonce, len(ciphertext).to_bytes(4, "big"), ciphertext,
            len(prev_hash).to_bytes(4, "big"), prev_hash))).digest()
        rows.append((seq, p.time_us, p.action, p.model, p.version, p.status, p.latency_us, p.cache_hit,
                     p.device, kid_raw, nonce, ciphertext, digest))
        prev_hash = digest
    return rows


def stored_row(values: Sequence[Any], prev_hash: bytes) -> dict[str, Any]:
    """A format-2 row (COLUMNS order) as readers see every row: named values, times as text, the
    key id as hex and the previous hash it chains from."""
    row = dict(zip(COLUMNS, values, strict=True))
    row["format"] = 2
    row["time"] = format_time(row["time_us"] * 1000)
    row["latency_ms"] = row["latency_us"] / 1000
    row["key_raw"], row["key_id"] = row["key_id"], bytes(row["key_id"]).hex()
    row["prev_hash"] = prev_hash
    return row


def recomputed_hash(row: Mapping[str, Any]) -> bytes:
    """The row hash ``row``'s stored values give (either format)."""
    if row["format"] == 1:
        return legacy.row_hash(row)
    return row_hash([row["key_raw"] if name == "key_id" else row[name] for name in COLUMNS[:-1]]
                    + [row["prev_hash"]])


def unseal(row: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
    """The sealed fields of a stored row (``payload`` as bytes or None); SealError if tampered."""
    aad = associated_data(row["seq"], row["key_id"], row["prev_hash"])
    try:
        plain = keyring.cipher(row["key_id"]).decrypt(row["nonce"], row["ciphertext"], aad)
    except (InvalidTag, ValueError, TypeError):
        raise SealError(f"seq {row['seq']}: ciphertext does not authenticate") from None
    fields = legacy.decode(plain) if row["format"] == 1 else plaintext.decode(plain)
    return {name: fields.get(name, None if name == "summary" else "") for name in (*SEALED_FIELDS, "payload")}
