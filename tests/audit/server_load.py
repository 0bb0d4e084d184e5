"""A real in-process server with strict audit, and a closed-loop load of predictions against it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from audit_testlib import reseal

from appliance.app import create_app
from appliance.audit import AuditLog, AuditRecord, audit_paths
from appliance.audit.keys import init_keys
from appliance.config import Settings

_DAY = 86400.0


def audited_settings(repository: Path, state: Path, **audit: Any) -> Settings:
    # Every client of the load is let in (adaptive admission would answer some with 429): these
    # tests are about the audit log under load, not about overload.
    settings = Settings().replace("server", models=repository, state_dir=state).replace(
        "audit", mode="strict", checkpoint_every=200, checkpoint_interval_s=1.0, **audit).replace(
        "limits", adaptive=False, max_concurrency=256)
    init_keys(settings)
    return settings


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        for _ in range(1200):
            if (await client.get("/v2/health/ready")).status == 200:
                break
            await asyncio.sleep(0.05)
        yield client
    finally:
        await client.close()


@dataclass
class Load:
    """``workers`` clients posting predictions back to back until stopped; every status counted."""

    client: TestClient
    body: dict[str, Any]
    statuses: Counter[int] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def start(cls, client: TestClient, repository: Path, workers: int = 4) -> Load:
        x = np.load(repository / "digits" / "data" / "eval.npz")["input"][:1]
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}]}
        load = cls(client, body)
        load._tasks = [asyncio.create_task(load._worker()) for _ in range(workers)]
        return load

    async def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.client.post("/v2/models/digits/infer", json=self.body,
                                            headers={"Cache-Control": "no-cache"}) as response:
                    await response.read()
                    self.statuses[response.status] += 1
            except aiohttp.ClientError:
                self.statuses[0] += 1  # no answer at all: what a full disk must never cause

    async def stop(self) -> Counter[int]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


async def prefill(settings: Settings, count: int, days_old: float = 0.0) -> None:
    log = AuditLog.open(settings)
    for i in range(count):
        log.append_nowait(AuditRecord("infer", request_id=f"{i:032x}", model="digits", version="1", status=200,
                                      input_sha256=f"{i:064x}", output_sha256=f"{i:064x}", principal="prefill"))
    await log.aclose()
    if days_old:
        old = int((time.time() - days_old * _DAY) * 1e6)

        def edit(seq: int, values: dict[str, Any], fields: dict[str, Any]) -> None:
            if seq <= count:
                values["time_us"] = old + seq

        reseal(settings, 1, edit)
        audit_paths(settings).checkpoints.write_bytes(b"")
        log = AuditLog.open(settings)  # sign the re-dated head, as the writer that wrote them would have
        log.close()


async def metrics_of(client: Any) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("appliance_audit_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def wait_for_purge(client: Any, within_s: float = 15.0) -> dict[str, float]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        metrics = await metrics_of(client)
        if metrics.get("appliance_audit_purged_records_total", 0) > 0:
            return metrics
        await asyncio.sleep(0.1)
    raise AssertionError(f"no purge within {within_s}s: {metrics}")
