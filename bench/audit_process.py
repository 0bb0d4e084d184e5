"""Strict appends through the audit writer process (``RemoteAuditLog``) vs the in-process ``AuditLog``.

    python bench/audit_process.py [--records 20000] [--concurrency 1,16,64] [--group-commit-ms 2]

Appenders behave as the server's: ``concurrency`` requests at a time, each awaiting its commit, with
``flush`` when every request in flight waits on the log (``InferenceAuditor``). CPU comes from
``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU): "loop" is the appending event loop's thread
alone, "client" its whole process (in-process: the writer thread included), "writer" the writer
process, "all" the sum. Run under ``taskset -c 0`` to see what one core pays.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.audit import AuditLog, AuditRecord
from appliance.audit.keys import init_keys
from appliance.audit.remote import RemoteAuditLog
from appliance.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _record(i: int) -> AuditRecord:
    return AuditRecord("infer", request_id=f"req-{i:08d}", principal="api-key:reporting", client="10.1.2.3",
                       model="digits", version="2", status=200, latency_ms=0.8, device="CPU",
                       input_sha256="ab" * 32, output_sha256="cd" * 32,
                       summary={"top_class": i % 10, "confidence": 0.97})


def cpu_ns(pid: int, tid: int | None = None) -> int:
    """Nanoseconds on CPU of one thread, or of every thread of the process."""
    tasks = [str(tid)] if tid is not None else os.listdir(f"/proc/{pid}/task")
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except FileNotFoundError:  # a thread that just ended
            continue
    return total


async def _strict(log: Any, records: int, concurrency: int) -> int:
    per_task = records // concurrency

    async def appender(offset: int) -> None:
        for i in range(per_task):
            await log.append(_record(offset + i), flush=log.waiting + 1 >= concurrency)

    await asyncio.gather(*(appender(c * per_task) for c in range(concurrency)))
    return per_task * concurrency


async def _measure(log: Any, records: int, concurrency: int, writer_pid: int | None) -> dict[str, float]:
    await _strict(log, min(records, 200), concurrency)  # warm up
    pid, tid = os.getpid(), threading.get_native_id()
    loop0, client0 = cpu_ns(pid, tid), cpu_ns(pid)
    writer0 = cpu_ns(writer_pid) if writer_pid else 0
    start = time.perf_counter()
    done = await _strict(log, records, concurrency)
    wall = time.perf_counter() - start
    loop = (cpu_ns(pid, tid) - loop0) / done / 1e3
    client = (cpu_ns(pid) - client0) / done / 1e3
    writer = (cpu_ns(writer_pid) - writer0) / done / 1e3 if writer_pid else 0.0
    return {"rate": done / wall, "loop": loop, "client": client, "writer": writer, "all": client + writer}


def _settings(state: Path, group_ms: float) -> Settings:
    return Settings().replace("server", state_dir=state).replace(
        "audit", mode="strict", group_commit_ms=group_ms)


async def _in_process(state: Path, records: int, concurrency: int, group_ms: float) -> dict[str, float]:
    log = AuditLog.open(_settings(state, group_ms))
    try:
        return await _measure(log, records, concurrency, None)
    finally:
        await log.aclose()


async def _remote(state: Path, records: int, concurrency: int, group_ms: float) -> dict[str, float]:
    sock, writer_pid = _WRITER["sock"], _WRITER["pid"]
    log = RemoteAuditLog.connect(_settings(state, group_ms), sock)
    try:
        return await _measure(log, records, concurrency, writer_pid)
    finally:
        await log.aclose()


_WRITER: dict[str, Any] = {}


def _start_writer(state: Path, group_ms: float) -> subprocess.Popen[bytes]:
    config = state / "appliance.toml"
    config.write_text(f'[server]\nstate_dir = "{state}"\nlog_level = "warning"\n\n'
                      f'[audit]\nmode = "strict"\ngroup_commit_ms = {group_ms}\n')
    sock = state / "audit.sock"
    writer = subprocess.Popen([sys.executable, "-m", "appliance.audit.process", "--config", str(config),
                               "--socket", str(sock)], cwd=ROOT)
    _WRITER.update(sock=sock, pid=writer.pid)
    return writer


def _run(kind: str, records: int, concurrency: int, group_ms: float) -> dict[str, float]:
    bench: Callable[..., Any] = _in_process if kind == "in-process" else _remote
    with tempfile.TemporaryDirectory(prefix="awb-", dir="/tmp") as tmp:  # short: a socket path's limit
        state = Path(tmp)
        init_keys(_settings(state, group_ms))
        writer = _start_writer(state, group_ms) if kind == "remote" else None
        try:
            try:
                import uvloop
            except ImportError:  # pragma: no cover
                return asyncio.run(bench(state, records, concurrency, group_ms))  # type: ignore[no-any-return]
            return uvloop.run(bench(state, records, concurrency, group_ms))  # type: ignore[no-any-return]
        finally:
            if writer is not None:
                writer.terminate()
                writer.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--group-commit-ms", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'':11} {'c':>4} {'rec/s':>9} {'loop µs':>8} {'client µs':>10} {'writer µs':>10} {'all µs':>8}"
          "   (CPU per record)")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        records = args.records if concurrency > 1 else min(args.records, 2000)
        for kind in ("in-process", "remote"):
            r = _run(kind, records, concurrency, args.group_commit_ms)
            print(f"{kind:11} {concurrency:>4} {r['rate']:>9.0f} {r['loop']:>8.1f} {r['client']:>10.1f} "
                  f"{r['writer']:>10.1f} {r['all']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
