"""What a shadow rollout costs the primary: the same model mirrored at 100 % to a candidate.

    python bench/rollouts.py [--seconds 5]

Server on core 1, load generator on core 0, the bundled ``digits`` model with a faithful copy
published as version 2 (the candidate), admission fixed so the closed-loop clients are all let in
(``adaptive = false``, ``max_concurrency`` 256: this measures mirroring, not overload):

1. capacity: closed loop at c=64 without a rollout (req/s);
2. half load: open loop at 0.5 × capacity, without and with a shadow rollout at 100 %: the
   primary's p50 and p99 (target: p50 rises at most 10 %);
3. saturation: closed loop at c=64 with the shadow rollout: throughput against (1) (target: drops at
   most 5 %, the mirrors being shed first) and the share of mirrors shed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import benchlib as b
from loadgen import json_bodies, run_load, run_open_loop

SERVER_CPU, CLIENT_CPU = "1", 0
ENV = {"APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": "256",
       "APPLIANCE_AUDIT_ENABLED": "false"}


def _put_rollout(port: int, body: dict[str, Any]) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/digits/rollout", method="PUT",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _mirror_counts(port: int) -> tuple[float, float]:
    samples = b.scrape(port)
    return (b.metric_total(samples, "appliance_rollout_mirrored_total"),
            b.metric_total(samples, "appliance_rollout_mirror_shed_total"))


def measure(models: Path, work: Path, seconds: float) -> dict[str, Any]:
    state = work / "state"
    url_path = "/v2/models/digits/infer"
    bodies = json_bodies(b.digits_rows(models))
    out: dict[str, Any] = {}
    with b.serve(models, state, env=ENV, cpus=SERVER_CPU) as server:
        url = f"http://127.0.0.1:{server.port}{url_path}"
        closed = asyncio.run(run_load(url, bodies, concurrency=64, seconds=seconds))
        capacity = closed.statuses[200] / seconds
        out["capacity c=64, no rollout"] = closed.summary()
        half = asyncio.run(run_open_loop(url, bodies, rate=capacity / 2, seconds=seconds))
        out["half load, no rollout"] = half.summary()
        _put_rollout(server.port, {"stable": 1, "candidate": 2, "mode": "shadow", "share": 1.0,
                                   "thresholds": {"min_samples": 10**9}})
        before = _mirror_counts(server.port)
        shadowed = asyncio.run(run_open_loop(url, bodies, rate=capacity / 2, seconds=seconds))
        after = _mirror_counts(server.port)
        out["half load, shadow 100%"] = {**shadowed.summary(), "mirrored": after[0] - before[0],
                                         "shed": after[1] - before[1]}
        saturated = asyncio.run(run_load(url, bodies, concurrency=64, seconds=seconds))
        final = _mirror_counts(server.port)
        out["saturation c=64, shadow 100%"] = {**saturated.summary(), "mirrored": final[0] - after[0],
                                               "shed": final[1] - after[1]}
    out["verdict"] = {
        "p50 with shadow / without (half load)": round(out["half load, shadow 100%"]["ok_p50_ms"]
                                                       / out["half load, no rollout"]["ok_p50_ms"], 3),
        "throughput with shadow / without (saturation)": round(saturated.statuses[200] / seconds / capacity, 3),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
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
        report = measure(models, work, args.seconds)
    for name, row in report.items():
        print(f"{name}: {json.dumps(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
