"""Readiness that tells the truth: the log's health while it cannot commit, the writer's own
recovery probe, relaxed mode's dropped records counted, and a damaged database moved aside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from audit_testlib import check, fill, make_settings, raw, record

from appliance.audit import AuditError, AuditLog, audit_paths
from appliance.audit.integrity import AuditCorruptError
from appliance.audit.writer import PROBE_INTERVAL_S

_BREAK = ("CREATE TRIGGER boom BEFORE INSERT ON records "
          "BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END")


async def _until(condition: object, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_strict_log_is_not_ready_while_it_cannot_commit_and_recovers_unprompted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = AuditLog.open(settings)
    assert log.health().ok and log.health().ready
    with raw(settings) as conn:
        conn.execute(_BREAK)
    with pytest.raises(AuditError, match="disk is full"):
        await log.append(record(1))
    health = log.health()
    assert (health.ok, health.ready) == (False, False) and "disk is full" in health.reason
    with raw(settings) as conn:
        conn.execute("DROP TRIGGER boom")
    # No traffic at all: the writer's probe finds the cause gone.
    assert await _until(lambda: log.health().ok, PROBE_INTERVAL_S * 3)
    await log.append(record(2))
    stats = log.stats()
    assert stats.commit_failures == 1 and stats.records_written == 1
    await log.aclose()
    assert check(settings).ok


async def test_relaxed_mode_keeps_serving_and_counts_what_it_drops(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="relaxed")
    log = AuditLog.open(settings)
    with raw(settings) as conn:
        conn.execute(_BREAK)
    for i in range(5):
        await log.append(record(i))
    assert await _until(lambda: log.stats().records_dropped == 5, 5.0)
    health = log.health()
    assert not health.ok and health.ready and "disk is full" in health.reason
    with raw(settings) as conn:
        conn.execute("DROP TRIGGER boom")
    await log.aclose()


async def test_a_truncated_database_is_moved_aside_not_opened(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await fill(settings, 400)
    database = audit_paths(settings).database
    size = database.stat().st_size
    with database.open("r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(AuditCorruptError, match=r"cut short.*moved aside, nothing overwritten") as caught:
        AuditLog.open(settings)
    kept = sorted(p.name for p in database.parent.iterdir() if ".corrupt-" in p.name)
    assert [name.split(".corrupt-")[0] for name in kept] == ["audit.checkpoints.jsonl", "audit.db"], kept
    assert next(p for p in database.parent.iterdir() if p.name.startswith("audit.db.corrupt-")).stat().st_size \
        == size // 2  # the evidence is as it was
    assert str(database.parent) in str(caught.value)
    log = AuditLog.open(settings)  # the next start begins a new log beside it
    await log.append(record(1))
    await log.aclose()
    assert check(settings).ok


def test_serve_exits_with_a_clear_message_and_code_3_on_a_damaged_database(tmp_path: Path) -> None:
    import subprocess
    import sys

    settings = make_settings(tmp_path)
    state = settings.server.state_dir
    audit_paths(settings).database.write_bytes(b"this is not an SQLite file" * 10)
    result = subprocess.run([sys.executable, "-m", "appliance", "serve", "--state-dir", str(state), "--models",
                             str(tmp_path / "none"), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "is damaged" in result.stderr and "moved aside" in result.stderr
