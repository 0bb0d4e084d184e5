"""``appliance audit export``: decrypt records for auditors, as JSON lines or CSV."""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson

from appliance.audit import store
from appliance.audit.keys import Keyring
from appliance.audit.model import AuditError
from appliance.audit.sealing import SEALED_FIELDS, SealError, format_time, unseal

FIELDS = ("seq", "time", "action", "model", "version", "status", "latency_ms", "cache_hit", "device",
          "key_id", *SEALED_FIELDS, "payload", "row_hash")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_when(text: str) -> str:
    """A date or ISO 8601 time (UTC unless it says otherwise) in the log's stored time format."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(f"{text!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_time((value - _EPOCH) // timedelta(microseconds=1) * 1000)


def records(database: Path, keyring: Keyring, since: str | None = None,
            until: str | None = None) -> Iterator[dict[str, Any]]:
    """Decrypted records with ``since <= time < until``; AuditError names a row that fails."""
    db = store.connect(database, create=False)
    try:
        for row in store.iter_rows(db.conn, since, until):
            try:
                sealed = unseal(row, keyring)
            except SealError as exc:
                raise AuditError(f"{exc}; run `appliance audit verify`") from None
            out = {name: row[name] for name in FIELDS[:10]}
            out["latency_ms"] = float(out["latency_ms"])
            out["cache_hit"] = bool(out["cache_hit"])
            out.update(sealed)
            payload = sealed["payload"]
            out["payload"] = base64.b64encode(payload).decode() if payload else None
            out["row_hash"] = row["row_hash"].hex()
            yield out
    finally:
        db.close()


def write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007 - the count is the result
        out.write(orjson.dumps(row).decode() + "\n")
    return count


def write_csv(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007
        if row["summary"] is not None:
            row["summary"] = orjson.dumps(row["summary"]).decode()
        writer.writerow(row)
    return count
