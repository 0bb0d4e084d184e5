"""Retention by age and by size run unattended while the server serves; the chain verifies across
them; the capacity forecast reaches /metrics and the status document."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from audit_testlib import check, raw
from server_load import Load, audited_settings, metrics_of, prefill, serving, wait_for_purge

from appliance.audit import audit_paths, store
from appliance.audit.upkeep import forecast

_DAY = 86400.0


def test_forecast() -> None:
    rate = 100.0 / _DAY  # 100 bytes a day
    # 180 days would hold 18,000 B: a 2,000 B limit is reached in 10 days; the limit spares the disk
    assert forecast(1000, 2000, 10**6, rate, 180) == (10 * _DAY, math.inf)
    # under a 100,000 B limit the age limit holds the log at 18,000 B: neither is ever reached
    assert forecast(1000, 100_000, 10**6, rate, 180) == (math.inf, math.inf)
    # kept forever on a disk with 5,000 B free: full in 50 days, long before the limit
    to_limit, to_full = forecast(1000, 10**9, 5000, rate, 0)
    assert to_full == 50 * _DAY and to_limit > to_full
    assert forecast(1000, 2000, 10, 0.0, 180) == (math.inf, math.inf)  # idle


async def test_retention_by_age_while_serving(repository: Path, tmp_path: Path) -> None:
    settings = audited_settings(repository, tmp_path / "state", retention_days=30.0,
                                retention_check_interval_s=0.2)
    await prefill(settings, 300, days_old=40)
    async with serving(settings) as client:
        load = Load.start(client, repository)
        metrics = await wait_for_purge(client)
        await asyncio.sleep(0.3)
        statuses = await load.stop()
        status = (await (await client.get("/v2/status")).json())["audit"]
    assert set(statuses) == {200}, statuses
    assert metrics["appliance_audit_size_limited"] == 0
    assert status["capacity"]["purged_records"] >= 300 and "older than 30 days" in status["capacity"]["last_purge"]
    report = check(settings)
    assert report.ok and report.first_seq and report.first_seq > 300, report.problems
    with raw(settings) as conn:
        assert conn.execute("SELECT count(*) FROM records WHERE seq <= 300").fetchone()[0] == 0
        lines = audit_paths(settings).checkpoints.read_text().splitlines()
    assert all('"seq":' in line for line in lines) and len(lines) < 50  # pruned with the purge


async def test_retention_by_size_while_serving(repository: Path, tmp_path: Path) -> None:
    limit = 600_000
    settings = audited_settings(repository, tmp_path / "state", max_bytes=limit, retention_check_interval_s=0.2)
    await prefill(settings, 4000)  # ~1.3 MB, all of it younger than retention_days
    async with serving(settings) as client:
        load = Load.start(client, repository)
        await wait_for_purge(client)
        await asyncio.sleep(0.6)  # a few more checks: the growth rate is measured between them
        statuses = await load.stop()
        status = (await (await client.get("/v2/status")).json())
        metrics = await metrics_of(client)
    assert set(statuses) == {200}, statuses
    assert metrics["appliance_audit_size_limited"] == 1 and metrics["appliance_audit_max_bytes"] == limit
    assert metrics["appliance_audit_growth_bytes_per_second"] > 0, (metrics, status["audit"])
    assert metrics['appliance_audit_forecast_seconds{until="limit"}'] < _DAY  # a week ahead: the alert fires
    capacity = status["audit"]["capacity"]
    assert "size limit 600,000 bytes reached before the 180-day retention" in capacity["last_purge"]
    database = audit_paths(settings).database
    assert database.stat().st_size <= limit * 1.2, capacity  # the file shrank (incremental vacuum)
    report = check(settings)
    assert report.ok, report.problems
    with raw(settings) as conn:
        assert any(r["action"] == "purge" for r in store.iter_rows(conn))  # each purge is a record
