"""Helpers shared by the audit tests: a configured state folder, records, raw database access."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.audit import AuditLog, AuditRecord, audit_paths, plaintext, store
from appliance.audit.keys import KEY_FILE, SIGNING_KEY_FILE, init_keys, load_keyring, load_signing_key, public_key_hex
from appliance.audit.sealing import COLUMNS, associated_data, row_hash, unseal
from appliance.audit.verify import Report, verify
from appliance.config import Settings

SECRET = b"DISTINCTIVE-7f3a9c-INPUT"
PRINCIPAL = "alice.distinctive@example.org"


def make_settings(tmp_path: Path, **audit: object) -> Settings:
    options = {"group_commit_ms": 1.0, "checkpoint_every": 10, **audit}
    settings = Settings().replace("server", state_dir=tmp_path / "state").replace("audit", **options)
    init_keys(settings)
    return settings


def record(i: int, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "action": "infer", "request_id": f"req-{i}", "principal": PRINCIPAL, "client": "10.0.0.7",
        "model": "digits", "version": "2", "status": 200, "latency_ms": 1.25 + i, "cache_hit": i % 2 == 0,
        "device": "CPU", "input_sha256": "ab" * 32, "output_sha256": "cd" * 32,
        "summary": {"top_class": i % 10, "confidence": 0.97}, "payload": SECRET + str(i).encode(),
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


async def fill(settings: Settings, count: int, start: int = 0) -> None:
    log = AuditLog.open(settings)
    await asyncio.gather(*(log.append(record(i)) for i in range(start, start + count)))
    await log.aclose()


def raw(settings: Settings) -> sqlite3.Connection:
    conn = sqlite3.connect(audit_paths(settings).database, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def check(settings: Settings, *, decrypt: bool = True) -> Report:
    paths = audit_paths(settings)
    keys = settings.server.state_dir / "keys"
    public = public_key_hex(load_signing_key(keys / SIGNING_KEY_FILE))
    keyring = load_keyring(keys / KEY_FILE) if decrypt else None
    return verify(paths.database, paths.checkpoints, public, keyring)


Edit = Callable[[int, dict[str, Any], dict[str, Any]], None]


def reseal(settings: Settings, start: int, edit: Edit) -> None:
    """Rewrite the rows from seq ``start`` on as someone holding the AES key (not the signing key)
    could: ``edit(seq, clear values, sealed fields)`` changes them in place, then every row is
    re-encrypted (the AAD binds the previous hash) and the chain recomputed."""
    keyring = load_keyring(settings.server.state_dir / "keys" / KEY_FILE)
    with raw(settings) as conn:
        rows = list(store.iter_rows(conn, first=start))
        prev = store.hash_at(conn, start - 1)
        assert prev is not None
        conn.execute("BEGIN")
        for row in rows:
            fields = unseal(row, keyring)
            values = {name: row["key_raw"] if name == "key_id" else row[name] for name in COLUMNS[:-1]}
            edit(row["seq"], values, fields)
            plain = plaintext.encode(AuditRecord("", **fields))
            values["ciphertext"] = keyring.cipher(row["key_id"]).encrypt(
                row["nonce"], plain, associated_data(row["seq"], row["key_id"], prev))
            prev = row_hash([*(values[name] for name in COLUMNS[:-1]), prev])
            conn.execute("UPDATE records SET time_us = ?, ciphertext = ?, row_hash = ? WHERE seq = ?",
                         (values["time_us"], values["ciphertext"], prev, row["seq"]))
        conn.execute("COMMIT")
