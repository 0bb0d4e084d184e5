"""Admission without a server: slots, the priority queue, its bounds and deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest

from appliance.dataplane.admission import Admission
from appliance.errors import DeadlineExceeded, Overloaded


async def test_waiters_get_slots_by_priority_then_arrival_and_the_queue_is_bounded() -> None:
    admission = Admission("m", max_concurrency=1, max_queue=3, max_queued_bytes=1 << 20)
    assert admission.try_enter()
    assert not admission.try_enter()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await admission.wait_turn(10, priority, None)
        order.append(name)
        admission.leave(time.monotonic())

    waiters = [asyncio.create_task(wait(name, priority)) for name, priority in
               (("low", 10), ("high-1", 1), ("high-2", 1))]
    await asyncio.sleep(0)
    assert admission.waiting == 3 and admission.queued_bytes == 30
    with pytest.raises(Overloaded):
        admission.check_room()
    admission.leave(time.monotonic())  # the first holder is done: the queue drains in order
    await asyncio.gather(*waiters)
    assert order == ["high-1", "high-2", "low"]
    assert (admission.in_flight, admission.waiting, admission.queued_bytes) == (0, 0, 0)


async def test_a_waiter_whose_deadline_passes_is_refused_and_leaves_no_trace() -> None:
    admission = Admission("m", max_concurrency=1, max_queue=4, max_queued_bytes=1 << 20)
    async with admission.slot():
        with pytest.raises(DeadlineExceeded):
            await admission.wait_turn(100, 10, time.monotonic() + 0.01)
        assert (admission.waiting, admission.queued_bytes) == (0, 0)
    assert admission.in_flight == 0
    assert admission.try_enter()
