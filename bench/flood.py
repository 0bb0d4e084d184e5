"""Overload with the default settings: a closed-loop flood against the real server, judged by the
server's own latency histogram.

    python bench/flood.py [--seconds 5] [--concurrency 256] [--models digits,medium] [--fixed 1,2,4,8,16,32]
                          [--passes 3]

For each model (the bundled ``digits`` and a ~500× heavier MLP 1024→1536→1536→1000), with the
server on core 1 and the load generator on core 0:

1. **unloaded**: one client for ``--seconds``: the p99 of the server's request histogram, with the
   load generator's core kept busy as the flood keeps it (see ``_busy``; the same with that core
   idle is reported beside it);
2. **flood, defaults**: ``--concurrency`` clients that retry at once, default settings (adaptive
   admission, strict audit): statuses, client errors (timeouts at 2 s, resets), goodput, and the
   admitted p99 from the server's histogram (the client's own scheduling delay does not count);
3. **flood, fixed limits**: the same flood with ``adaptive = false`` and ``max_queue = 0`` at each
   ``--fixed`` limit; the best goodput among those whose p99 stays within 2× unloaded is the bar.

Targets (issue 13): only 200 and 429, admitted p99 ≤ 2× unloaded p99, goodput ≥ 0.9× the best fixed
limit that meets the same bound. Everything targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import benchlib as b
import numpy as np
from loadgen import json_bodies, run_load

SERVER_CPU, CLIENT_CPU = "1", 0
HISTOGRAM = "appliance_request_duration_seconds"


def _bodies(model: str, models: Path) -> list[bytes]:
    if model == "digits":
        return json_bodies(b.digits_rows(models))
    rows = np.random.default_rng(0).uniform(0, 1, (64, 1024)).astype(np.float32)
    return json_bodies(rows)


def _measure(port: int, model: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    asyncio.run(run_load(url, bodies, concurrency=concurrency, seconds=0.5, timeout_s=2.0, warmup_s=0.5))
    before = b.scrape(port)
    result = asyncio.run(run_load(url, bodies, concurrency=concurrency, seconds=seconds, timeout_s=2.0,
                                  warmup_s=0.0))
    after = b.scrape(port)
    summary = result.summary()
    summary["server_p99_ms"] = round(b.histogram_quantile(before, after, HISTOGRAM, 0.99, model=model) * 1000, 3)
    summary["server_p50_ms"] = round(b.histogram_quantile(before, after, HISTOGRAM, 0.5, model=model) * 1000, 3)
    limits = [s for s in after if s.name == "appliance_admission_limit" and s.labels.get("model") == model]
    if limits:
        summary["admission_limit"] = limits[0].value
    noload = [s for s in after if s.name == "appliance_admission_noload_latency_seconds"
              and s.labels.get("model") == model]
    if noload:
        summary["limiter_noload_p99_ms"] = round(noload[0].value * 1000, 3)  # what the limiter measured
    return summary


def _run(models: Path, work: Path, model: str, env: dict[str, str], concurrency: int, seconds: float,
         label: str, busy_neighbour: bool = False) -> dict[str, Any]:
    state = work / f"state-{model}-{label}"
    state.mkdir(parents=True)
    b.init_audit_keys(state)
    bodies = _bodies(model, models)
    with b.serve(models, state, env=env, cpus=SERVER_CPU) as server, _busy(CLIENT_CPU, busy_neighbour):
        return _measure(server.port, model, bodies, concurrency, seconds)


@contextlib.contextmanager
def _busy(cpu: int, wanted: bool) -> Iterator[None]:
    """A process spinning on ``cpu`` (the load generator's core) while the block runs.

    The unloaded reference is measured with it: on this host a core busy with a plain Python loop
    lifted the server's p99 on the *other* core from 0.75 to 0.97-1.34 ms with one client and no
    other load (p50 unchanged: the strict audit's fsync waits on kernel threads that share the
    busy core). The flood's load generator keeps that core busy, so an unloaded reference taken
    beside an idle core charged the host's noise to the server's admission.
    """
    if not wanted:
        yield
        return
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _configurations(concurrency: int, fixed: list[int]) -> list[tuple[str, int, dict[str, str]]]:
    """(label, clients, environment) of each configuration, unloaded first."""
    out: list[tuple[str, int, dict[str, str]]] = [("unloaded c=1, idle neighbour", 1, {}), ("unloaded c=1", 1, {}),
                                                  (f"flood c={concurrency}, defaults", concurrency, {})]
    for limit in fixed:
        out.append((f"flood c={concurrency}, fixed {limit}", concurrency, {
            "APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": str(limit),
            "APPLIANCE_LIMITS_MAX_QUEUE": "0"}))
    return out


def verdict(rows: dict[str, dict[str, Any]], concurrency: int, fixed: list[int]) -> dict[str, Any]:
    """The targets, judged on one pass's rows (or on the medians of several passes)."""
    unloaded, adaptive = rows["unloaded c=1"], rows[f"flood c={concurrency}, defaults"]
    bound_ms = 2 * unloaded["server_p99_ms"]
    best = None
    for limit in fixed:
        row = rows[f"flood c={concurrency}, fixed {limit}"]
        if row["server_p99_ms"] <= bound_ms and (best is None or row["ok_per_s"] > best[1]):
            best = (limit, row["ok_per_s"])
    return {
        "admitted p99 / unloaded p99": round(adaptive["server_p99_ms"] / unloaded["server_p99_ms"], 2),
        "only 200 and 429": set(adaptive["statuses"]) <= {"200", "429"} and not adaptive["errors"],
        "best fixed limit within 2x": best[0] if best else None,
        "goodput / best fixed": round(adaptive["ok_per_s"] / best[1], 2) if best else None,
    }


def flood(models: Path, work: Path, model: str, concurrency: int, seconds: float,
          fixed: list[int], passes: int = 1) -> dict[str, Any]:
    """Every configuration ``passes`` times, interleaved (pass 1 of each, then pass 2...), so slow
    drift of a shared host reaches all of them alike.

    With more than one pass the verdict is also taken on the medians: a p99 from one 5-s window
    moved by a third between runs of the same configuration on this host (digits, fixed 1: 0.99
    to 1.64 ms), more than the step from one request in flight to the next, so one pass cannot
    say which fixed limit is within 2×.
    """
    configurations = _configurations(concurrency, fixed)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in configurations}
    for index in range(passes):
        for position, (label, clients, env) in enumerate(configurations):
            runs[label].append(_run(models, work, model, env, clients, seconds, f"{position}-{index}",
                                    busy_neighbour=label == "unloaded c=1"))
    out: dict[str, Any] = {label: rows[0] if passes == 1 else rows for label, rows in runs.items()}
    out["verdict"] = (verdict({label: rows[0] for label, rows in runs.items()}, concurrency, fixed) if passes == 1
                      else [verdict({label: rows[i] for label, rows in runs.items()}, concurrency, fixed)
                            for i in range(passes)])
    if passes > 1:
        medians = {label: {"server_p99_ms": float(np.median([r["server_p99_ms"] for r in rows])),
                           "ok_per_s": float(np.median([r["ok_per_s"] for r in rows])),
                           "statuses": dict(sum((Counter(r["statuses"]) for r in rows), Counter())),
                           "errors": dict(sum((Counter(r["errors"]) for r in rows), Counter()))}
                   for label, rows in runs.items()}
        out["verdict on medians"] = verdict(medians, concurrency, fixed)
    return out


def main() -> int:
    os.environ.setdefault("NNCF_CI", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--models", default="digits,medium")
    parser.add_argument("--fixed", default="1,2,4,8,16,32", help="fixed limits to compare against")
    parser.add_argument("--passes", type=int, default=1, help="run every configuration this many times, "
                        "interleaved; the verdict is also taken on the medians")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CPU})
    fixed = [int(v) for v in args.fixed.split(",") if v]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        work = Path(tmp)
        models = b.copy_repository(b.bundled_models(fp32_only=False), work / "models")
        b.publish_mlp(models, "medium")
        for model in args.models.split(","):
            print(f"{model}: server on core {SERVER_CPU}, load generator on core {CLIENT_CPU}", flush=True)
            report[model] = flood(models, work, model, args.concurrency, args.seconds, fixed, args.passes)
            for name, row in report[model].items():
                print(f"  {name}: {json.dumps(row)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
