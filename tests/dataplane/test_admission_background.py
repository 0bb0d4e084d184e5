"""Background admission (batch jobs): a job's request takes a slot only in the headroom live
requests leave, waits otherwise (never refused), yields to waiting live requests, and does not
teach the adaptive limit."""

from __future__ import annotations

import asyncio
import time

from appliance.dataplane.admission import Admission
from appliance.dataplane.limiter import GradientLimit, LimitSettings


def admission(limit: int = 4, adaptive: GradientLimit | None = None) -> Admission:
    return Admission("m", max_concurrency=limit, max_queue=0, max_queued_bytes=1 << 20, adaptive=adaptive)


async def test_background_waits_for_headroom_and_is_never_refused() -> None:
    gate = admission(limit=4)
    assert gate.try_enter() and gate.try_enter()  # live traffic holds half the limit
    job = asyncio.create_task(gate.wait_headroom(0.5))
    await asyncio.sleep(0.01)
    assert not job.done() and gate.in_flight == 2  # no headroom below half the limit: it waits
    gate.leave(time.monotonic())
    await asyncio.wait_for(job, 1)
    assert gate.in_flight == 2 and gate.background_in_flight == 1
    gate.leave_background(time.monotonic())
    assert gate.in_flight == 1 and gate.background_in_flight == 0


async def test_live_requests_keep_the_slots_above_the_headroom() -> None:
    gate = admission(limit=4)
    await gate.wait_headroom(0.5)
    await gate.wait_headroom(1.0)
    blocked = asyncio.create_task(gate.wait_headroom(0.5))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert gate.try_enter() and gate.try_enter()  # live requests still find their slots
    gate.leave_background(time.monotonic())
    await asyncio.sleep(0.01)
    assert not blocked.done()  # four in flight: still no headroom
    blocked.cancel()


async def test_a_waiting_live_request_goes_before_background_work() -> None:
    gate = Admission("m", max_concurrency=1, max_queue=4, max_queued_bytes=1 << 20)
    assert gate.try_enter()
    live = asyncio.create_task(gate.wait_turn(0, 1, None))
    job = asyncio.create_task(gate.wait_headroom(1.0))
    await asyncio.sleep(0.01)
    gate.leave(time.monotonic())
    await asyncio.wait_for(live, 1)
    assert not job.done()  # the live request took the slot
    gate.leave(time.monotonic())
    await asyncio.wait_for(job, 1)
    gate.leave_background(time.monotonic())


async def test_background_latency_does_not_move_the_adaptive_limit() -> None:
    limiter = GradientLimit(LimitSettings(initial=8, floor=1, cap=16, window_s=0.0, min_samples=1))
    gate = admission(limit=16, adaptive=limiter)
    before = limiter.limit
    for _ in range(20):
        await gate.wait_headroom(1.0)
        await asyncio.sleep(0.002)
        gate.leave_background(time.monotonic())
    assert limiter.limit == before and limiter.noload_s == 0.0


async def test_background_work_pauses_only_while_live_requests_are_answered() -> None:
    gate = admission(limit=4)
    await gate.wait_headroom(0.5)
    started = time.monotonic() - 0.01  # the job's request held its slot for 10 ms
    assert gate.leave_background(started, pace=3.0) == 0.0  # no live traffic: flat out
    assert gate.try_enter()
    gate.leave(time.monotonic())  # a live request was just answered
    await gate.wait_headroom(0.5)
    pause = gate.leave_background(time.monotonic() - 0.01, pace=3.0)
    assert 0.029 <= pause < 0.2  # three times as long as it held the slot
