"""Bytes on disk per prediction record of the audit log (issue 20).

    python bench/audit_bytes.py [--records 20000] [--concurrency 64]

Appends prediction-shaped records (a 128-bit request id, a principal, a client address, input and
output SHA-256, the classifier summary the server writes, and, where the record model has them,
the manifest hash and route label) through the real ``AuditLog`` in strict mode, then folds the
WAL into the database (``wal_checkpoint(TRUNCATE)``) and reports the growth of ``audit.db`` per
record: SQLite's page and cell overhead, the primary key and the time index included.
A first small batch is written and measured apart, so schema pages do not count.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from appliance.audit import AuditLog, AuditRecord, audit_paths
from appliance.audit.keys import init_keys
from appliance.config import Settings

_FIELDS = {f.name for f in dataclasses.fields(AuditRecord)}


def _record(rng: random.Random) -> AuditRecord:
    row = [rng.random() for _ in range(10)]
    best = row.index(max(row))
    record = AuditRecord(
        "infer", request_id=f"{rng.getrandbits(128):032x}", principal="api-key:reporting", client="10.1.2.3",
        model="digits", version="2", status=200, latency_ms=rng.uniform(0.5, 20.0), device="CPU",
        input_sha256=f"{rng.getrandbits(256):064x}", output_sha256=f"{rng.getrandbits(256):064x}",
        summary={"output": "probabilities", "rows": 1, "top_class": [best],
                 "confidence": [round(row[best] / sum(row), 4)]})
    extra = {"manifest_sha256": f"{rng.getrandbits(256):064x}", "route": "stable"}
    for name, value in extra.items():
        if name in _FIELDS:
            setattr(record, name, value)
    return record


async def _append(settings: Settings, count: int, concurrency: int, rng: random.Random) -> None:
    log = AuditLog.open(settings)
    per_task = max(1, count // concurrency)

    async def appender() -> None:
        for _ in range(per_task):
            await log.append(_record(rng))

    await asyncio.gather(*(appender() for _ in range(count // per_task)))
    await log.aclose()


def _size(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = database.with_name(database.name + "-wal")
    return database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rng = random.Random(20)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings().replace("server", state_dir=Path(tmp))
        init_keys(settings)
        database = audit_paths(settings).database
        asyncio.run(_append(settings, 256, 16, rng))
        before = _size(database)
        start = time.perf_counter()
        asyncio.run(_append(settings, args.records, args.concurrency, rng))
        elapsed = time.perf_counter() - start
        after = _size(database)
    per_record = (after - before) / args.records
    print(f"{args.records} prediction records: audit.db grew {after - before:,} bytes = "
          f"{per_record:.0f} B/record ({args.records / elapsed:,.0f} records/s strict, c={args.concurrency})")


if __name__ == "__main__":
    main()
