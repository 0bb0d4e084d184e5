"""How one record becomes one stored row: what is sealed, the AEAD, and the chain hash.

Clear columns — seq, time, action, model, version, status, latency_ms, cache_hit, device — are
operational facts: what the appliance did, when, with which model and how fast. Operators need
them to count, filter (``export --since``, ``purge --before``) and alert without holding the key,
and they name neither a person nor the data.

Sealed (AES-256-GCM, one fresh random 96-bit nonce per record):

* principal, client address, request id — identify a person or a session and join other logs;
* input/output SHA-256 — a hash of a low-entropy input (an age, a yes/no form) can be brute-forced
  back to the input, so it is as sensitive as the input;
* summary — the prediction itself (a class, a score) is personal data in most deployments;
* detail (free text) and payload (captured inputs/outputs, only when the model opts in).

The associated data binds the sequence number, key id and previous hash, so a sealed blob cannot
be moved to another position, relabelled with another key id or spliced into another chain.
The row hash covers every stored column (clear values, key id, nonce, ciphertext, previous hash)
in an unambiguous length-prefixed encoding. Ciphertext length reveals plaintext length.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag

from appliance.audit.keys import Keyring
from appliance.audit.model import AuditError, AuditRecord
from appliance.system.utctime import utc_second

#: Stored columns in hashing order; ``row_hash`` (last) covers all the others.
COLUMNS = ("seq", "time", "action", "model", "version", "status", "latency_ms", "cache_hit", "device",
           "key_id", "nonce", "ciphertext", "prev_hash", "row_hash")
SEALED_FIELDS = ("request_id", "principal", "client", "input_sha256", "output_sha256", "summary",
                 "detail")
_HASH_DOMAIN = b"appliance-audit-row-v1"
_AAD_DOMAIN = b"appliance-audit-aad-v1"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
NONCE_BYTES = 12


class SealError(AuditError):
    """A row's ciphertext does not authenticate under its seq, key id and previous hash."""


@dataclass(slots=True)
class Prepared:
    """A record turned into the bytes to seal, before its place in the chain is known.

    ``clear_encoded`` is the row-hash encoding of the clear columns (time … device), done once here
    so that chaining a record only encodes what depends on its position.
    """

    time: str
    action: str
    model: str
    version: str
    status: int
    latency_ms: float
    cache_hit: int
    device: str
    plaintext: bytes
    clear_encoded: bytes


def format_time(ns: int) -> str:
    """UTC ISO 8601 with microseconds and ``Z``: sorts as text, so range queries use the index."""
    secs, rem = divmod(ns, 1_000_000_000)
    return f"{utc_second(secs)}.{rem // 1000:06d}Z"


def _clean(text: str) -> str:
    """SQLite and JSON refuse lone surrogates; one odd client string must not fail a batch."""
    if text.isascii():  # nearly every value: no surrogate possible, no encode needed
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _plaintext(record: AuditRecord) -> bytes:
    # Only the fields that are set (SEALED_FIELDS order), spelled out: this runs once per record.
    header: dict[str, Any] = {}
    if record.request_id:
        header["request_id"] = record.request_id
    if record.principal:
        header["principal"] = record.principal
    if record.client:
        header["client"] = record.client
    if record.input_sha256:
        header["input_sha256"] = record.input_sha256
    if record.output_sha256:
        header["output_sha256"] = record.output_sha256
    if record.summary:
        header["summary"] = record.summary
    if record.detail:
        header["detail"] = record.detail
    try:
        encoded = orjson.dumps(header, option=_JSON_OPTIONS)
    except TypeError:  # a lone surrogate (fixed below) or a summary JSON cannot hold
        header = {name: _clean(value) if isinstance(value, str) else value for name, value in header.items()}
        try:
            encoded = orjson.dumps(header, option=_JSON_OPTIONS)
        except TypeError as exc:
            raise AuditError(f"audit record summary is not JSON-serialisable: {exc}") from None
    return len(encoded).to_bytes(4, "big") + encoded + (record.payload or b"")


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
    tail: bytes  # … of cache_hit, device (they follow latency_ms)


_COLUMNS_CACHE: dict[tuple[Any, ...], _Columns] = {}
_COLUMNS_CACHE_SIZE = 4096


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
    if not math.isfinite(latency):
        latency = -1.0
    c = _columns((record.action, record.model, record.version, record.status, record.cache_hit, record.device))
    when = format_time(time_ns)
    when_ascii, latency_hex = when.encode(), latency.hex().encode()
    clear = b"".join((len(when_ascii).to_bytes(4, "big"), when_ascii, c.head,
                      len(latency_hex).to_bytes(4, "big"), latency_hex, c.tail))
    return Prepared(when, c.action, c.model, c.version, c.status, latency, c.cache_hit, c.device,
                    _plaintext(record), clear)


def associated_data(seq: int, kid: str, prev_hash: bytes) -> bytes:
    return _AAD_DOMAIN + seq.to_bytes(8, "big") + kid.encode("ascii") + prev_hash


def row_hash(values: Sequence[Any]) -> bytes:
    """SHA-256 over the stored values, each type-normalised and length-prefixed."""
    parts = [_HASH_DOMAIN]
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
    values = (seq, p.time, p.action, p.model, p.version, p.status, p.latency_ms, p.cache_hit, p.device,
              kid, nonce, ciphertext, prev_hash)
    return (*values, row_hash(values))


def seal_chain(prepared: Sequence[Prepared], seq: int, prev_hash: bytes, keyring: Keyring,
               nonce_list: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """Rows for ``prepared`` chained after (``seq``, ``prev_hash``): :func:`seal` in one tight loop.

    The row hash is built from each record's ``clear_encoded`` plus the columns that depend on its
    position, byte for byte what :func:`row_hash` computes (a test holds the two together).
    """
    kid = keyring.active_id
    encrypt = keyring.cipher(kid).encrypt
    kid_ascii = kid.encode("ascii")
    kid_encoded = _prefixed(kid_ascii)
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
        rows.append((seq, p.time, p.action, p.model, p.version, p.status, p.latency_ms, p.cache_hit, p.device,
                     kid, nonce, ciphertext, prev_hash, digest))
        prev_hash = digest
    return rows


def unseal(row: Mapping[str, Any] | sqlite3.Row, keyring: Keyring) -> dict[str, Any]:
    """The sealed fields of a stored row (``payload`` as bytes or None); SealError if tampered."""
    aad = associated_data(row["seq"], row["key_id"], row["prev_hash"])
    try:
        plain = keyring.cipher(row["key_id"]).decrypt(row["nonce"], row["ciphertext"], aad)
    except (InvalidTag, ValueError, TypeError):
        raise SealError(f"seq {row['seq']}: ciphertext does not authenticate") from None
    size = int.from_bytes(plain[:4], "big")
    header = orjson.loads(plain[4:4 + size])
    fields = {name: header.get(name, None if name == "summary" else "") for name in SEALED_FIELDS}
    fields["payload"] = plain[4 + size:] or None
    return fields
