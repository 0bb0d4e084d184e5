"""What strict audit costs under a saturated load (issue 5), in one run on 127.0.0.1.

    python bench/audit_overhead.py [--rounds 2] [--concurrency 64] [--interval-ms 3000] [--json FILE]
                                   [--writer-cpu N]

The bundled ``digits`` model, server pinned to core 0, perf_analyzer on core 1, JSON, every
request bypassing the cache (``Cache-Control: no-cache``) so each one runs the model and leaves
a record. Audit off and audit strict alternate (``--rounds`` times each, fresh server each time)
so a noisy minute on a shared host hurts both alike; the ratio is of the medians. The writer's
records/s and records per group commit come from the server's own ``/metrics``.
The writer alone (no HTTP) is measured by ``bench/audit_writer.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b
from serving_engine import CLIENT_CPU, SERVER_CPU, _measure

MODES = {"off": {"APPLIANCE_AUDIT_ENABLED": "false"}, "strict": {"APPLIANCE_AUDIT_MODE": "strict"}}


def _audit_counters(port: int) -> dict[str, float]:
    samples = b.scrape(port)
    return {name: b.metric_total(samples, name)
            for name in ("appliance_audit_records_written_total", "appliance_audit_commits_total")}


def _move_writer(pid: int, cpu: int) -> bool:
    """Pin the server's ``audit-writer`` thread (named for the OS by the server) to ``cpu``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "audit-writer":
                os.sched_setaffinity(int(task.name), {cpu})
                return True
        except OSError:
            continue
    return False


def one(pa: str, models: Path, work: Path, mode: str, index: int, data: Path, concurrency: int,
        interval_ms: int, writer_cpu: int | None = None) -> dict[str, Any]:
    repo = b.copy_repository(models, work / f"{mode}{index}" / "models")
    state = repo.parent / "state"
    state.mkdir()
    b.init_audit_keys(state)
    with b.serve(repo, state, env=MODES[mode], cpus=SERVER_CPU, log_file=state / "server.log") as server:
        if writer_cpu is not None and mode != "off" and not _move_writer(server.pid, writer_cpu):
            raise RuntimeError("no audit-writer thread found in the server")
        before, started = _audit_counters(server.port), time.monotonic()
        result, cpu_us, busy = _measure(pa, server.pid, server.port, data, concurrency=concurrency,
                                        interval_ms=interval_ms, headers={"Cache-Control": "no-cache"},
                                        client_cpus=CLIENT_CPU)
        after, wall = _audit_counters(server.port), time.monotonic() - started
    row: dict[str, Any] = {"mode": mode, "req_s": round(result.throughput, 1), "p50_ms": result.p50_ms,
                           "p99_ms": result.p99_ms, "cpu_us_per_req": round(cpu_us), "core_busy": round(busy, 2)}
    written = after.get("appliance_audit_records_written_total", 0) - before.get(
        "appliance_audit_records_written_total", 0)
    commits = after.get("appliance_audit_commits_total", 0) - before.get("appliance_audit_commits_total", 0)
    if written:
        row["writer_records_s"] = round(written / wall, 1)
        row["records_per_commit"] = round(written / max(1.0, commits), 1)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    # 64: a load that saturates the one core in both modes. At 16 strict mode is partly latency-bound
    # (requests wait on the fsync of their group), so its ratio there measures latency, not cost.
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--writer-cpu", type=int, help="move the audit writer thread to this CPU (a host "
                        "with a core to spare; on a 2-core host it shares the load generator's core)")
    args = parser.parse_args()
    pa = b.perf_analyzer()
    if pa is None:
        return 1
    models = b.bundled_models()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = Path(tmp)
        data = b.write_input_data(work / "rows.json", "input", b.digits_rows(models), streams=256)
        for index in range(args.rounds):
            for mode in ("off", "strict"):
                rows.append(one(pa, models, work, mode, index, data, args.concurrency, args.interval_ms,
                                args.writer_cpu))
    median = {m: statistics.median(r["req_s"] for r in rows if r["mode"] == m) for m in MODES}
    strict = [r for r in rows if r["mode"] == "strict"]
    summary = {"ratio_strict_over_off": round(median["strict"] / median["off"], 3), "median_req_s": median,
               "writer_records_s": [r.get("writer_records_s") for r in strict],
               "records_per_commit": [r.get("records_per_commit") for r in strict], "runs": rows}
    print(f"strict / off = {summary['ratio_strict_over_off']} (median req/s: off {median['off']:.0f}, strict "
          f"{median['strict']:.0f}); writer {summary['writer_records_s']} records/s, "
          f"{summary['records_per_commit']} records per commit")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
