"""Worker processes (``server.workers``): what a second worker costs and buys, in one run.

    python bench/multicore.py [--workers 1,2] [--interval-ms 3000] [--json FILE]

For each worker count, the same bundled ``digits`` model (FP32 ONNX, ONNX Runtime), admission
letting every client in, audit as installed (strict, keys generated; ``--no-audit`` turns it off):

- idle: start → ready seconds; RSS of every process and PSS summed over them (pages shared after
  the fork or mapped from the same files count once); CPU over 5 idle seconds;
- open loop at about half of one worker's capacity (perf_analyzer ``--request-rate-range``): the
  server's CPU per request, every process of it read from /proc (supervisor, workers, audit
  writer), in all and by process. On a 2-core box this is the figure that predicts a bigger one:
  the load generator takes the second core, so throughput cannot show what a second worker buys;
- closed loop at concurrency 64, JSON: throughput and p99, for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b


def server_processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_by_process(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system) of each process still alive, by pid."""
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(cpu_by_process(processes).values())


def role(process: psutil.Process, root: int) -> str:
    """supervisor, audit writer or worker: the writer is the child that serves no HTTP port."""
    if process.pid == root:
        return "server" if not process.children() else "supervisor"
    listening = any(c.status == psutil.CONN_LISTEN for c in process.net_connections(kind="inet"))
    return "worker" if listening else "audit writer"


def memory(processes: list[psutil.Process]) -> dict[str, Any]:
    rows = []
    for process in processes:
        info = process.memory_full_info()
        rows.append({"pid": process.pid, "rss_mib": round(info.rss / 2**20, 1), "pss_mib": round(info.pss / 2**20, 1)})
    return {"processes": rows, "rss_mib_total": round(sum(r["rss_mib"] for r in rows), 1),
            "pss_mib_total": round(sum(r["pss_mib"] for r in rows), 1)}


def measure(workers: int, models: Path, rows: Any, binary: str, interval_ms: int,
            rate: float | None, audit: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mc-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        b.init_audit_keys(state)
        data = b.write_input_data(Path(tmp) / "data.json", "input", rows)
        # The prediction cache is off by default (model.toml); admission fixed and wide: every client in.
        env = {"APPLIANCE_SERVER_WORKERS": str(workers), "APPLIANCE_LIMITS_ADAPTIVE": "false",
               "APPLIANCE_LIMITS_MAX_CONCURRENCY": "1024",
               "APPLIANCE_AUDIT_ENABLED": "true" if audit else "false"}
        with b.serve(models, state, env=env, log_file=Path(tmp) / "server.log") as server:
            time.sleep(1.0)
            processes = server_processes(server.pid)
            idle_before = cpu_seconds(processes)
            time.sleep(5.0)
            idle_cpu = (cpu_seconds(processes) - idle_before) / 5.0 * 100
            result: dict[str, Any] = {"workers": workers, "ready_s": round(server.ready_s, 2),
                                      "idle_cpu_percent": round(idle_cpu, 2), "memory": memory(processes)}
            closed = b.run_perf(binary, server.port, "digits", data, concurrency=64, interval_ms=interval_ms)
            result["closed_c64"] = {"throughput": round(closed.throughput, 1), "p99_ms": round(closed.p99_ms, 2)}
            offered = rate or round(closed.throughput / 2, -2)
            before_each = cpu_by_process(processes)
            before_cpu = sum(before_each.values())
            before = b.metric_total(b.scrape(server.port), "appliance_requests_total", status="200")
            opened = b.run_perf(binary, server.port, "digits", data, concurrency=0, interval_ms=interval_ms,
                                extra=("--request-rate-range", str(offered)))
            after = b.metric_total(b.scrape(server.port), "appliance_requests_total", status="200")
            after_each = cpu_by_process(processes)
            used = sum(after_each.values()) - before_cpu
            answered = max(1.0, after - before)
            result["cpu_us_per_request_by_process"] = [  # perf_analyzer's few connections may all reach one worker
                {"pid": p.pid, "role": role(p, server.pid),
                 "cpu_us": round((after_each.get(p.pid, 0.0) - before_each.get(p.pid, 0.0)) / answered * 1e6, 1)}
                for p in processes]
            result["open_loop"] = {"offered_per_s": offered, "throughput": round(opened.throughput, 1),
                                   "p50_ms": round(opened.p50_ms, 2), "p99_ms": round(opened.p99_ms, 2),
                                   "cpu_us_per_request": round(used / answered * 1e6, 1), "requests": int(answered)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--rate", type=float, help="open-loop rate (default: half of 1 worker's closed-loop c=64)")
    parser.add_argument("--no-audit", action="store_true", help="audit off (default: strict, as installed)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    binary = b.perf_analyzer()
    if binary is None:
        return 1
    models = b.bundled_models()
    rows = b.digits_rows(models)
    results: list[dict[str, Any]] = []
    rate = args.rate
    for count in (int(w) for w in args.workers.split(",")):
        results.append(measure(count, models, rows, binary, args.interval_ms, rate, not args.no_audit))
        rate = rate or results[0]["open_loop"]["offered_per_s"]  # the same offered load for every count
        print(json.dumps(results[-1]), flush=True)
    base = results[0]
    for other in results[1:]:
        ratio = other["open_loop"]["cpu_us_per_request"] / base["open_loop"]["cpu_us_per_request"]
        print(f"workers {other['workers']} vs {base['workers']}: CPU per request {ratio:.2f}×, "
              f"closed-loop throughput {other['closed_c64']['throughput'] / base['closed_c64']['throughput']:.2f}×, "
              f"PSS {other['memory']['pss_mib_total']} vs {base['memory']['pss_mib_total']} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
