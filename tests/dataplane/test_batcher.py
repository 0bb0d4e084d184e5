"""The batcher with a fake runtime (this stage alone, as STYLE allows): requests share batches and
get their own rows, a runtime error fails every waiting request, a request whose deadline passes
while queued never runs, preferred sizes wait at most the queue delay, and a runtime that raises
on start gives its slot back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from appliance.dataplane.batching import Batcher
from appliance.errors import DeadlineExceeded, InferenceFailed
from appliance.runtimes import PortInfo, Tensors

Completion = Callable[[Tensors | BaseException], None]


class FakeRuntime:
    """Runs ``x * 2`` when told to: each started batch waits until the test releases it."""

    runtime, device = "fake", "CPU"
    inputs = (PortInfo("x", "FP32", (-1, 2)),)
    outputs = (PortInfo("y", "FP32", (-1, 2)),)

    def __init__(self, slots: int = 1, fail: bool = False, refuse_start: bool = False) -> None:
        self.slots = slots
        self.fail = fail
        self.refuse_start = refuse_start
        self.started: list[tuple[Tensors, Completion]] = []

    def start(self, inputs: Tensors, done: Completion) -> None:
        if self.refuse_start:
            raise RuntimeError("runtime closed")
        self.started.append((inputs, done))

    def release(self) -> int:
        """Complete every started batch; returns how many there were."""
        started, self.started = self.started, []
        for inputs, done in started:
            done(RuntimeError("boom") if self.fail else {"y": inputs["x"] * 2})
        return len(started)

    def infer(self, inputs: Tensors) -> Tensors:
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        pass


def rows(count: int, start: float = 0.0) -> Tensors:
    return {"x": np.arange(start, start + 2 * count, dtype=np.float32).reshape(count, 2)}


async def test_waiting_requests_share_one_batch_and_each_gets_its_own_rows() -> None:
    runtime = FakeRuntime()
    batcher = Batcher(runtime, max_batch_size=16)
    first = asyncio.create_task(batcher.run(rows(1)))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.run(rows(n, 10.0 * n))) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    assert runtime.release() == 1  # the first ran alone: a slot was free
    await asyncio.sleep(0.01)
    assert runtime.release() == 1  # the three that waited ran as one batch of 6 rows
    for n, task in zip((1, 2, 3), others, strict=True):
        outputs, batch_rows = await task
        assert batch_rows == 6
        np.testing.assert_array_equal(outputs["y"], rows(n, 10.0 * n)["x"] * 2)
    assert (await first)[1] == 1


async def test_a_runtime_error_fails_every_request_of_the_batch() -> None:
    runtime = FakeRuntime(fail=True)
    batcher = Batcher(runtime, max_batch_size=16)
    busy = asyncio.create_task(batcher.run(rows(1)))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.run(rows(1))) for _ in range(3)]
    await asyncio.sleep(0)
    runtime.release()
    await asyncio.sleep(0.01)
    runtime.release()
    for task in (busy, *waiting):
        with pytest.raises(InferenceFailed):
            await task


async def test_a_deadline_that_passes_while_queued_is_refused_and_never_runs() -> None:
    runtime = FakeRuntime()
    batcher = Batcher(runtime, max_batch_size=16)
    busy = asyncio.create_task(batcher.run(rows(1)))
    await asyncio.sleep(0)
    late = asyncio.create_task(batcher.run(rows(1, 5.0), deadline=time.monotonic() + 0.01))
    await asyncio.sleep(0.05)
    runtime.release()
    with pytest.raises(DeadlineExceeded):
        await late
    await busy
    await asyncio.sleep(0.01)
    assert runtime.started == []  # the expired request was never handed to the runtime


async def test_a_preferred_size_waits_at_most_the_queue_delay() -> None:
    runtime = FakeRuntime()
    batcher = Batcher(runtime, max_batch_size=16, max_queue_delay_s=0.05, preferred_batch_size=(4,))
    task = asyncio.create_task(batcher.run(rows(1)))
    await asyncio.sleep(0.01)
    assert runtime.started == []  # held for company
    await asyncio.sleep(0.08)
    assert runtime.release() == 1  # ran alone once the delay was over
    await task
    tasks = [asyncio.create_task(batcher.run(rows(1))) for _ in range(4)]
    await asyncio.sleep(0)
    assert len(runtime.started) == 1 and runtime.started[0][0]["x"].shape[0] == 4  # the preferred size: at once
    runtime.release()
    await asyncio.gather(*tasks)


async def test_a_runtime_that_raises_on_start_fails_the_batch_and_gives_the_slot_back() -> None:
    runtime = FakeRuntime(refuse_start=True)
    batcher = Batcher(runtime, max_batch_size=16)
    with pytest.raises(InferenceFailed, match="runtime closed"):
        await batcher.run(rows(1))
    runtime.refuse_start = False
    task = asyncio.create_task(batcher.run(rows(1)))
    await asyncio.sleep(0)
    assert runtime.release() == 1  # the slot is free again
    await task
