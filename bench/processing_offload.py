"""What handing one request's processing to a worker thread costs: ``asyncio.to_thread`` (the loop's
default executor, with a contextvars copy) against ``loop.run_in_executor`` on a small dedicated pool
(what ``appliance.dataplane.processing`` uses). The work itself is a no-op, so the figure is the hop.

Usage: ``python bench/processing_offload.py [--calls 20000] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor


def _work(value: int) -> int:
    return value + 1


async def _measure(hop: Callable[[int], Awaitable[int]], calls: int, concurrency: int) -> float:
    """Microseconds of wall time per call with ``concurrency`` callers."""
    async def caller(count: int) -> None:
        for i in range(count):
            await hop(i)

    started = time.perf_counter()
    await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
    return (time.perf_counter() - started) / calls * 1e6


async def _main(calls: int, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(4, thread_name_prefix="bench-pool")

    async def to_thread(value: int) -> int:
        return await asyncio.to_thread(_work, value)

    async def dedicated(value: int) -> int:
        return await loop.run_in_executor(pool, _work, value)

    for _ in range(2):  # alternate, keep the second round
        figures = {name: await _measure(hop, calls, concurrency)
                   for name, hop in (("asyncio.to_thread", to_thread), ("dedicated pool", dedicated))}
    for name, micros in figures.items():
        print(f"{name:18s} {micros:6.1f} µs per call (c={concurrency})")
    pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args.calls, args.concurrency))


if __name__ == "__main__":
    main()
