"""A small closed-loop load generator for what perf_analyzer cannot report: the share of 429s
and the latency of *admitted* requests under overload.

    python bench/loadgen.py --url http://127.0.0.1:8080/v2/models/digits/infer --concurrency 160 --seconds 10

Each of ``concurrency`` workers sends a request, waits for the answer, and sends the next (a
refused request is retried at once: a flood, not a polite client). Only 127.0.0.1 is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    ok_latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def share(self, status: int) -> float:
        return self.statuses[status] / max(1, self.total)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.ok_latencies_ms, q)) if self.ok_latencies_ms else float("nan")

    def summary(self) -> dict[str, object]:
        return {"seconds": round(self.seconds, 2), "sent_per_s": round(self.total / self.seconds, 1),
                "ok_per_s": round(self.statuses[200] / self.seconds, 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "errors": dict(self.errors), "share_429": round(self.share(429), 4),
                "ok_p50_ms": round(self.percentile(50), 2), "ok_p99_ms": round(self.percentile(99), 2)}


def _check_loopback(url: str) -> None:
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen only targets the loopback interface")


async def run_load(url: str, bodies: list[bytes], *, concurrency: int, seconds: float,
                   headers: dict[str, str] | None = None, warmup_s: float = 1.0,
                   timeout_s: float = 30.0) -> LoadResult:
    """Closed loop: ``concurrency`` workers for ``warmup_s + seconds``; only the last part counts."""
    import aiohttp

    _check_loopback(url)
    result = LoadResult(seconds)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    start = time.monotonic()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def worker(index: int) -> None:
        i = index
        while True:
            sent = time.monotonic()
            if sent >= stop_at:
                return
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=hdrs) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                if sent >= measure_from:
                    result.errors[type(exc).__name__] += 1
                continue
            finally:
                i += concurrency
            if sent >= measure_from:
                result.statuses[status] += 1
                if status == 200:
                    result.ok_latencies_ms.append((time.monotonic() - sent) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return result


async def run_open_loop(url: str, bodies: list[bytes], *, rate: float, seconds: float,
                        headers: dict[str, str] | None = None, warmup_s: float = 1.0,
                        timeout_s: float = 30.0, max_outstanding: int = 2048) -> LoadResult:
    """Open loop: a request every ``1 / rate`` seconds whatever the answers (the arrival rate of many
    independent clients), so a slower server meets queueing instead of a politely slower client."""
    import aiohttp

    _check_loopback(url)
    result = LoadResult(seconds)
    connector = aiohttp.TCPConnector(limit=0)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    interval = 1.0 / rate
    start = time.monotonic()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds
    outstanding: set[asyncio.Task[None]] = set()

    async def one(index: int, sent: float) -> None:
        try:
            async with session.post(url, data=bodies[index % len(bodies)], headers=hdrs) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if sent >= measure_from:
                result.errors[type(exc).__name__] += 1
            return
        if sent >= measure_from:
            result.statuses[status] += 1
            if status == 200:
                result.ok_latencies_ms.append((time.monotonic() - sent) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        index = 0
        while (due := start + index * interval) < stop_at:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if len(outstanding) < max_outstanding:
                task = asyncio.create_task(one(index, due))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
            elif due >= measure_from:
                result.errors["client_overrun"] += 1
            index += 1
        await asyncio.gather(*outstanding)
    return result


def json_bodies(rows: np.ndarray, name: str = "input", datatype: str = "FP32") -> list[bytes]:
    return [json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": [1, *row.shape],
                                    "data": row.tolist()}]}).encode() for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--features", type=int, default=64, help="FP32 features per row of random input")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = np.random.default_rng(0).uniform(0, 16, (256, args.features)).astype(np.float32)
    headers = dict(h.split(":", 1) for h in args.header)
    result = asyncio.run(run_load(args.url, json_bodies(rows), concurrency=args.concurrency,
                                  seconds=args.seconds, headers=headers))
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
