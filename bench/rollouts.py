"""What a shadow rollout costs the primary: the same model mirrored at 100 % to a candidate.

    python bench/rollouts.py [--seconds 2] [--rounds 8]

Server on core 1, load generator on core 0, the bundled ``digits`` model with a faithful copy
published as version 2 (the candidate), admission fixed so the closed-loop clients are all let in
(``adaptive = false``, ``max_concurrency`` 256: this measures mirroring, not overload):

1. capacity: closed loop at c=64 without a rollout (req/s);
2. half load: open loop at 0.5 × capacity, in ``--rounds`` paired rounds of ``--seconds`` without
   and with a shadow rollout at 100 % (the order alternates, so a drift of the host counts against
   both sides alike): the primary's p50 as the client sees it and as the server's histogram has
   it (target: p50 rises at most 10 %);
3. saturation: the same paired rounds as a closed loop at c=64: throughput with / without (target:
   drops at most 5 %, the mirrors being shed first) and the share of mirrors shed.

Each ratio is the median over the rounds: on this shared 2-core host one unpaired pass moved the
p50 ratio between 1.17 and 1.68 from run to run with the server unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as b
from loadgen import LoadResult, json_bodies, run_load, run_open_loop
from multicore import cpu_seconds, server_processes

SERVER_CPU, CLIENT_CPU = "1", 0
ENV = {"APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": "256",
       "APPLIANCE_AUDIT_ENABLED": "false"}
SHADOW = {"stable": 1, "candidate": 2, "mode": "shadow", "share": 1.0, "thresholds": {"min_samples": 10**9}}
HISTOGRAM = "appliance_request_duration_seconds"


def _rollout(port: int, method: str, body: dict[str, Any] | None = None) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/digits/rollout", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _phase(server: b.Server, shadow: bool, load: Callable[[], LoadResult]) -> dict[str, Any]:
    """One phase of a round: the rollout set (or removed), the load, the server's view of it."""
    port = server.port
    _rollout(port, "PUT", SHADOW) if shadow else _rollout(port, "DELETE")
    processes = server_processes(server.process.pid)
    before, cpu_before = b.scrape(port), cpu_seconds(processes)
    result = load()
    after, cpu_after = b.scrape(port), cpu_seconds(processes)
    answered = b.metric_total(after, "appliance_requests_total") - b.metric_total(before, "appliance_requests_total")
    mirrored = (b.metric_total(after, "appliance_rollout_mirrored_total")
                - b.metric_total(before, "appliance_rollout_mirrored_total"))
    shed = (b.metric_total(after, "appliance_rollout_mirror_shed_total")
            - b.metric_total(before, "appliance_rollout_mirror_shed_total"))
    return {**result.summary(), "server_p50_ms": round(1000 * b.histogram_quantile(before, after, HISTOGRAM, 0.5,
                                                                                      model="digits"), 3),
            "mirrored": mirrored, "mirrors_shed": shed,
            "server_cpu_us_per_request": round(1e6 * (cpu_after - cpu_before) / max(1.0, answered), 1)}


Pair = tuple[dict[str, Any], dict[str, Any]]  # one round: without, with the shadow rollout


def _paired(server: b.Server, rounds: int, load: Callable[[], LoadResult]) -> list[Pair]:
    """``rounds`` pairs (without, with shadow); odd rounds run the shadow phase first."""
    pairs = []
    for index in range(rounds):
        if index % 2:
            with_shadow = _phase(server, True, load)
            pairs.append((_phase(server, False, load), with_shadow))
        else:
            without = _phase(server, False, load)
            pairs.append((without, _phase(server, True, load)))
    return pairs


def _median_ratio(pairs: list[Pair], key: str) -> float:
    return round(statistics.median(shadow[key] / plain[key] for plain, shadow in pairs), 3)


def measure(models: Path, work: Path, seconds: float, rounds: int) -> dict[str, Any]:
    bodies = json_bodies(b.digits_rows(models))
    out: dict[str, Any] = {}
    with b.serve(models, work / "state", env=ENV, cpus=SERVER_CPU) as server:
        url = f"http://127.0.0.1:{server.port}/v2/models/digits/infer"
        closed = asyncio.run(run_load(url, bodies, concurrency=64, seconds=seconds))
        capacity = closed.statuses[200] / seconds
        out["capacity c=64, no rollout"] = closed.summary()
        half = _paired(server, rounds,
                       lambda: asyncio.run(run_open_loop(url, bodies, rate=capacity / 2, seconds=seconds)))
        saturated = _paired(server, rounds,
                            lambda: asyncio.run(run_load(url, bodies, concurrency=64, seconds=seconds)))
    for index, (plain, shadow) in enumerate(half):
        out[f"half load, round {index + 1}"] = {"without": plain, "shadow 100%": shadow}
    for index, (plain, shadow) in enumerate(saturated):
        out[f"saturation c=64, round {index + 1}"] = {"without": plain, "shadow 100%": shadow}
    shed = sum(s["mirrors_shed"] for _, s in saturated)
    mirrored = sum(s["mirrored"] for _, s in saturated)
    out["verdict"] = {
        "p50 with shadow / without (half load, client)": _median_ratio(half, "ok_p50_ms"),
        "p50 with shadow / without (half load, server histogram)": _median_ratio(half, "server_p50_ms"),
        "server CPU per request with shadow / without (half load)": _median_ratio(half, "server_cpu_us_per_request"),
        "throughput with shadow / without (saturation)": _median_ratio(saturated, "ok_per_s"),
        "share of mirrors shed at saturation": round(shed / max(1, shed + mirrored), 3),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory(prefix="bench-rollouts-") as tmp:
        work = Path(tmp)
        models = b.copy_repository(b.bundled_models(), work / "models")
        sys.path.insert(0, str(b.ROOT / "tests" / "lifecycle"))
        from lifecycle_testlib import publish_copy

        publish_copy(models / "digits")
        (models / "digits" / "model.toml").write_text((models / "digits" / "model.toml").read_text()
                                                       .replace("[cache]\nenabled = true", "[cache]\nenabled = false"))
        report = measure(models, work, args.seconds, args.rounds)
    for name, row in report.items():
        print(f"{name}: {json.dumps(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
