"""Records/s of the audit writer: strict (awaited, many concurrent appenders) vs relaxed.

    python bench/audit_writer.py [--records 20000] [--concurrency 1,16,64,256] [--group-commit-ms 0,2]

Each run uses a fresh database in a temporary folder with realistic records (hashes, a summary,
no payload). "loop µs/rec" is the event loop's own cost per append (enqueue only); strict rows/s
is what awaited appenders see end to end, including the fsync of every group commit; its
"cpu µs/rec" is the process's CPU time (event loop and writer thread) per record: run it under
``taskset -c 0`` to see what one core pays, hand-offs between the two threads included.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from appliance.audit import AuditLog, AuditRecord
from appliance.audit.keys import init_keys
from appliance.config import Settings


def _record(i: int) -> AuditRecord:
    return AuditRecord("infer", request_id=f"req-{i:08d}", principal="api-key:reporting", client="10.1.2.3",
                       model="digits", version="2", status=200, latency_ms=0.8, device="CPU",
                       input_sha256="ab" * 32, output_sha256="cd" * 32,
                       summary={"top_class": i % 10, "confidence": 0.97})


async def _strict(log: AuditLog, records: int, concurrency: int) -> float:
    per_task = records // concurrency

    async def appender(offset: int) -> None:
        for i in range(per_task):
            await log.append(_record(offset + i))

    start = time.perf_counter()
    await asyncio.gather(*(appender(c * per_task) for c in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - start)


async def _relaxed(log: AuditLog, records: int) -> tuple[float, float]:
    start = time.perf_counter()
    for i in range(records):
        log.append_nowait(_record(i))
    enqueued = time.perf_counter()
    await log.aclose()
    return records / (time.perf_counter() - start), (enqueued - start) / records * 1e6


async def _run(mode: str, records: int, concurrency: int, group_ms: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings().replace("server", state_dir=Path(tmp)).replace(
            "audit", mode=mode, group_commit_ms=group_ms)
        init_keys(settings)
        log = AuditLog.open(settings)
        if mode == "strict":
            cpu = time.process_time()
            rate = await _strict(log, records, concurrency)
            cpu_us = (time.process_time() - cpu) / (records // concurrency * concurrency) * 1e6
            stats = log.stats()
            await log.aclose()
            per_commit = stats.records_written / max(1, stats.commits)
            return (f"strict   c={concurrency:<4} gc={group_ms:<4} {rate:>9.0f} rec/s  {per_commit:7.1f} rec/commit  "
                    f"{cpu_us:5.1f} cpu µs/rec")
        rate, loop_us = await _relaxed(log, records)
        stats = log.stats()
        per_commit = stats.records_written / max(1, stats.commits)
        return (f"relaxed  c=-    gc={group_ms:<4} {rate:>9.0f} rec/s  {per_commit:7.1f} rec/commit  "
                f"loop {loop_us:.1f} µs/rec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--group-commit-ms", default="0,2")
    args = parser.parse_args()
    for group_ms in (float(g) for g in args.group_commit_ms.split(",")):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            records = args.records if concurrency > 1 else min(args.records, 2000)
            print(asyncio.run(_run("strict", records, concurrency, group_ms)), flush=True)
        print(asyncio.run(_run("relaxed", args.records, 0, group_ms)), flush=True)


if __name__ == "__main__":
    main()
