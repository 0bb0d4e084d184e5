"""CPU per request of each stage of the request path, measured in-process (issue 4).

    taskset -c 0 python bench/stage_costs.py [--rounds 7] [--seconds 0.5] [--concurrency 16]

``serving_engine.py --parts b`` switches stages off one at a time and compares whole servers
under perf_analyzer. On a shared host a server's CPU per request drifts by ±25 % from one minute
to the next, which is more than most single stages cost. This bench drives the real objects in one
process instead: the repository and runtime, the service with its batcher and runtime threads,
the prediction cache, the strict audit log with its writer thread, the quality observer, the
guard, the codec and the request log.
- Service stages run as a closed loop of concurrent coroutines, like the HTTP clients.
- The HTTP layer's own steps are timed call by call.
- Configurations alternate round by round and each reports the median of its rounds, so a slow
  minute hits all of them alike.

"cpu µs/req" is the process's CPU time (every thread) per request. Run it under ``taskset -c 0``
so that the runtime and audit threads share one core with the loop, as in the HTTP bench.
What aiohttp itself costs per request (parsing, routing, writing) is not here: serving_engine's
bare floor measures that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Service configurations, each adding one stage to the one before (the last: a cache hit).
SERVICE_STAGES = (
    "runtime thread hop (batcher → runtime → loop), admission, validation, metrics",
    "+ prediction cache, every lookup a miss (digest, key, lookup, insert, evict)",
    "+ prediction-quality observer",
    "+ strict audit (record on the loop, seal + group commit on the writer thread)",
    "all of the above, cache hit",
    "all of the above, cache miss, audit relaxed (written after the answer) instead of strict",
)


def per_call_us(fn: Callable[[], object], n: int) -> float:
    """CPU µs of one call, over ``n`` calls (one round)."""
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1e6


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int, seconds: float) -> float:
    """CPU µs per completed call while ``concurrency`` coroutines call back to back."""
    done = 0
    stop = False

    async def client(offset: int) -> None:
        nonlocal done
        i = offset
        while not stop:
            await call(i)
            done += 1
            i += concurrency

    started = time.process_time()
    clients = [asyncio.create_task(client(c)) for c in range(concurrency)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*clients)
    return (time.process_time() - started) / max(1, done) * 1e6


class Bench:
    """The real parts, as ``appliance.parts.build_parts`` assembles them for the server (minus aiohttp).

    Admission is fixed (adaptive off, a cap above the concurrency) so every client is let in:
    this bench compares the cost of stages at one concurrency, not overload behaviour.
    """

    def __init__(self, repository: Path, state: Path) -> None:
        from appliance.audit import open_audit_log
        from appliance.audit.keys import init_keys
        from appliance.audit.requests import InferenceAuditor
        from appliance.auth.apikeys import locked_store, new_key
        from appliance.config import load_settings
        from appliance.dataplane.cache import PredictionCache
        from appliance.parts import build_parts
        from appliance.protocol.codec import decode_request

        keys_file = state / "api-keys.json"
        token, record = new_key("bench", ["infer"], None)
        with locked_store(keys_file) as store:
            store[record.key_id] = record
        self.token = token
        # APPLIANCE_* variables apply as in the server (APPLIANCE_RUNTIME_NIREQ=1, ...).
        self.settings = load_settings().replace("server", models=repository, state_dir=state).replace(
            "auth", api_keys_file=keys_file).replace("audit", mode="strict").replace(
            "limits", adaptive=False, max_concurrency=1024)
        init_keys(self.settings)
        parts = build_parts(self.settings)
        parts.repository.load_all()
        self.repository, self.metrics, self.service, self.guard = (parts.repository, parts.metrics, parts.service,
                                                                   parts.guard)
        self.miss_cache = PredictionCache(2048, 60.0)  # 2 KiB: every insert evicts, every lookup misses
        self.hit_cache = PredictionCache(64 << 20, 3600.0)
        self.audit_log, self.auditor = parts.audit_log, self.service.audit
        self.relaxed_log = open_audit_log(self.settings.replace("audit", mode="relaxed",
                                                                database=state / "relaxed.db"))
        self.relaxed_auditor = InferenceAuditor(self.relaxed_log, lambda: self.service.active)
        self.quality_observers = list(self.service.observers)
        rows = np.load(repository / "digits" / "data" / "eval.npz")["input"][:256].astype(np.float32)
        self.bodies = [(b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":['
                        + ",".join(repr(float(v)) for v in row).encode() + b"]}]}") for row in rows]
        self.requests = [decode_request(body, None, 1 << 20) for body in self.bodies]

    def configure(self, stage: int) -> None:
        self.service.cache = self.hit_cache if stage == 4 else self.miss_cache
        self.service.observers = self.quality_observers if stage >= 2 else []
        self.service.audit = self.relaxed_auditor if stage == 5 else self.auditor if stage >= 3 else None

    async def infer(self, i: int, use_cache: bool) -> Any:
        from appliance.dataplane.context import RequestContext

        ctx = RequestContext(request_id=f"{i:032x}", use_cache=use_cache)
        return await self.service.infer(ctx, "digits", None, self.requests[i % len(self.requests)])

    async def service_stage(self, stage: int, concurrency: int, seconds: float) -> tuple[float, float]:
        """(CPU µs per request, mean requests per runtime batch) of one configuration."""
        self.configure(stage)
        use_cache = stage >= 1
        histogram = self.metrics.for_version("digits", "1").batch_requests
        batches, requests = sum(histogram.counts), histogram.total
        if stage == 4:
            cpu_us = await closed_loop(lambda i: self.infer(0, True), concurrency, seconds)
        else:
            cpu_us = await closed_loop(lambda i: self.infer(i, use_cache), concurrency, seconds)
        batches, requests = sum(histogram.counts) - batches, histogram.total - requests
        return cpu_us, requests / batches if batches else 0.0

    def http_steps(self, n: int) -> dict[str, float]:
        """The HTTP layer's steps around the service, call by call."""
        import random

        from appliance import logs
        from appliance.dataplane.context import RequestContext
        from appliance.dataplane.tensors import InferResponse
        from appliance.observability import tracing
        from appliance.protocol.codec import decode_request, encode_response

        request = self.requests[0]
        outputs = {"probabilities": np.full((1, 10), 0.1, dtype=np.float32)}
        response = InferResponse("digits", "1", outputs, id=None)
        body = self.bodies[0]
        fields = {"request_id": "0" * 32, "trace_id": "1" * 32, "principal": "api-key:bench", "model": "digits",
                  "version": "1", "protocol": "rest", "status": 200, "batch_size": 3, "cache_hit": False,
                  "latency_ms": 1.234}
        request_log = logs.RequestLog(logs.logging.getLogger("appliance.request"))
        return {
            "request id + W3C trace context + RequestContext": per_call_us(lambda: RequestContext(
                request_id=f"{random.getrandbits(128):032x}", client="127.0.0.1",
                trace_id=tracing.begin(None).trace_id), n),
            "auth: API key (split, SHA-256, constant-time compare)": per_call_us(
                lambda: self.guard.authenticate(None, self.token, None), n),
            "decode the JSON request (orjson, validate, to numpy)": per_call_us(
                lambda: decode_request(body, None, 1 << 20), n),
            "encode the JSON response": per_call_us(lambda: encode_response(response, request), n),
            "request log line (format, buffer)": per_call_us(lambda: request_log.write(fields), n),
        }


async def run(repository: Path, state: Path, rounds: int, seconds: float, concurrency: int,
              n: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    from appliance import logs

    bench = Bench(repository, state)
    figures: dict[str, list[float]] = {}
    batch: dict[str, list[float]] = {}
    for _ in range(rounds):
        for stage, name in enumerate(SERVICE_STAGES):
            cpu_us, mean_batch = await bench.service_stage(stage, concurrency, seconds)
            figures.setdefault(name, []).append(cpu_us)
            batch.setdefault(name, []).append(mean_batch)
        for name, value in bench.http_steps(n).items():
            figures.setdefault(name, []).append(value)
        logs.flush_request_lines()
    stats, relaxed = bench.audit_log.stats(), bench.relaxed_log.stats()
    extra: dict[str, Any] = {"audit records per commit (strict)": stats.records_written / max(1, stats.commits),
                             "audit records per commit (relaxed)": relaxed.records_written / max(1, relaxed.commits),
                             "mean requests per runtime batch": {n: statistics.median(v) for n, v in batch.items()}}
    await bench.audit_log.aclose()
    await bench.relaxed_log.aclose()
    bench.repository.close()
    return figures, extra


def main() -> int:
    os.environ.setdefault("NNCF_CI", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="closed-loop time per configuration and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per HTTP step and round")
    parser.add_argument("--repository", type=Path, help="model repository with digits (default: build one)")
    args = parser.parse_args()
    try:
        import uvloop
        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        work = Path(tmp)
        repository = args.repository
        if repository is None:
            import benchlib

            repository = benchlib.copy_repository(benchlib.bundled_models(), work / "models")
        state = work / "state"
        state.mkdir()
        from appliance import logs

        with open(os.devnull, "wb") as sink:
            logs._fast_stream = sink  # what configure_logging sets (stderr), minus the terminal
            figures, extra = runner(run(repository, state, args.rounds, args.seconds, args.concurrency,
                                        args.calls))
    print(f"one core: {os.sched_getaffinity(0) == {0}}; c={args.concurrency}; median (min–max) of "
          f"{args.rounds} alternating rounds; CPU µs per request")
    batches = extra.pop("mean requests per runtime batch")
    medians = [statistics.median(figures[name]) for name in SERVICE_STAGES]
    lows = [min(figures[name]) for name in SERVICE_STAGES]
    # What each configuration adds to the one it builds on (the cache hit stands alone), by
    # medians and by minimums (the quietest round: what an uncontended core would pay).
    base_of = {1: 0, 2: 1, 3: 2, 5: 2}
    for stage, name in enumerate(SERVICE_STAGES):
        values = figures[name]
        delta = ""
        if stage in base_of:
            base = base_of[stage]
            delta = f"  ({medians[stage] - medians[base]:+5.1f} / min {lows[stage] - lows[base]:+5.1f})"
        mean_batch = f"  [batch {batches[name]:.1f}]" if batches[name] else ""
        print(f"{medians[stage]:7.1f} ({min(values):6.1f}–{max(values):6.1f})  {name}{delta}{mean_batch}")
    for name, values in figures.items():
        if name not in SERVICE_STAGES:
            print(f"{statistics.median(values):7.2f} ({min(values):6.2f}–{max(values):6.2f})  {name}")
    for name, value in extra.items():
        print(f"{value:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
