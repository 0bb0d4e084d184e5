"""Refusal pacing: 429s beyond ``limits.refusals_per_s`` wait their turn (never past Retry-After)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from server_testlib import client_for, publish_heavy_model

from appliance.appkeys import METRICS
from appliance.dataplane.admission import RefusalPacer


def test_pacer_answers_a_burst_at_once_then_spaces_refusals_within_retry_after() -> None:
    pacer = RefusalPacer(rate=20.0)
    delays = [pacer.delay(retry_after=0.3) for _ in range(60)]
    assert delays[:19] == [0.0] * 19  # one second's worth of burst is answered at once
    assert all(0.0 <= d <= 0.3 for d in delays)
    assert max(delays) > 0.29 and pacer.paced > 0  # a long storm waits the whole Retry-After
    waits = [d for d in delays if d]
    assert 0.03 < waits[0] < waits[1] < waits[2] < 0.3  # turns one interval (50 ms) apart, in arrival order


def test_pacing_off_never_waits() -> None:
    pacer = RefusalPacer(rate=0.0)
    assert [pacer.delay(1.0) for _ in range(1000)] == [0.0] * 1000 and pacer.paced == 0


async def test_a_retry_storm_is_paced_and_still_gets_429_with_retry_after(repository: Path, tmp_path: Path) -> None:
    publish_heavy_model(repository)
    client = await client_for(repository, tmp_path, limits={"max_concurrency": 1, "max_queue": 1,
                                                             "refusals_per_s": 10.0})
    x = np.random.default_rng(1).standard_normal((8, 1024)).astype(np.float32)
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [8, 1024], "data": x.ravel().tolist()}]}

    async def timed() -> tuple[int, float, str | None]:
        started = time.monotonic()
        response = await client.post("/v2/models/heavy/infer", json=doc)
        await response.read()
        return response.status, time.monotonic() - started, response.headers.get("Retry-After")

    try:
        results = await asyncio.wait_for(asyncio.gather(*[timed() for _ in range(60)]), 120)
        refused = [(seconds, retry) for status, seconds, retry in results if status == 429]
        assert {status for status, _, _ in results} <= {200, 429}
        assert len(refused) > 20
        assert all(retry is not None and int(retry) >= 1 for _, retry in refused)
        assert all(seconds < int(retry) + 2.0 for seconds, retry in refused)  # no refusal waits past its Retry-After
        assert max(seconds for seconds, _ in refused) > 0.2  # past the burst, refusals waited their turn
        paced = client.app[METRICS].registry.get_sample_value("appliance_refusals_paced_total")
        assert paced is not None and paced > 0
        assert (await client.get("/v2/health/ready")).status == 200
    finally:
        await client.close()
