"""The log itself: strict commits before returning, relaxed does not wait, nothing leaks in clear."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from audit_testlib import PRINCIPAL, SECRET, check, fill, make_settings, raw, record

from appliance.audit import AuditError, AuditLog, AuditRecord, audit_paths, open_audit_log
from appliance.audit.export import records as exported
from appliance.audit.keys import load_keyring
from appliance.system.threadname import os_thread_names


async def test_strict_append_returns_after_commit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, group_commit_ms=50.0)
    log = AuditLog.open(settings)
    try:
        for i in range(3):
            await log.append(record(i))
            with sqlite3.connect(audit_paths(settings).database) as other:
                assert other.execute("SELECT count(*) FROM records").fetchone()[0] == i + 1
    finally:
        await log.aclose()


async def test_relaxed_append_returns_before_commit_and_close_flushes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="relaxed")
    log = AuditLog.open(settings)
    # Another writer holds the database: the writer thread cannot commit until it lets go, so
    # relaxed appends must return without waiting for it (deterministic, not a timing race).
    blocker = sqlite3.connect(audit_paths(settings).database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    await log.append(record(0))
    log.append_nowait(record(1))
    with sqlite3.connect(audit_paths(settings).database) as other:
        assert other.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    assert log.stats().records_pending == 2
    blocker.execute("ROLLBACK")
    blocker.close()
    await log.aclose()
    stats = log.stats()
    assert (stats.records_written, stats.records_pending, stats.last_checkpoint_seq) == (2, 0, 2)
    assert check(settings).ok


async def test_concurrent_appends_share_transactions_and_keep_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, group_commit_ms=5.0)
    log = AuditLog.open(settings)
    await asyncio.gather(*(log.append(record(i)) for i in range(200)))
    stats = log.stats()
    await log.aclose()
    assert stats.records_written == 200 and stats.healthy and stats.last_error is None
    assert stats.commits < 50  # group commit: far fewer transactions than records
    keyring = load_keyring(settings.server.state_dir / "keys" / "audit.key")
    rows = list(exported(audit_paths(settings).database, keyring))
    assert [r["seq"] for r in rows] == list(range(1, 201))
    assert sorted(r["request_id"] for r in rows) == sorted(f"req-{i}" for i in range(200))
    first = next(r for r in rows if r["request_id"] == "req-4")
    assert first["payload"] is not None and first["summary"] == {"top_class": 4, "confidence": 0.97}
    assert (first["principal"], first["model"], first["status"], first["cache_hit"]) == (PRINCIPAL, "digits", 200, True)
    report = check(settings)
    assert report.ok, report.problems
    assert report.rows == 200 and report.last_signed_seq == 200


async def test_no_plaintext_reaches_the_database_or_wal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = AuditLog.open(settings)
    await asyncio.gather(*(log.append(record(i, detail="DETAIL-SECRET-91")) for i in range(20)))
    paths = audit_paths(settings)
    wal = paths.database.with_name(paths.database.name + "-wal")
    assert wal.stat().st_size > 0  # the rows are in the WAL right now: grep it too
    for path in (paths.database, wal, paths.checkpoints):
        data = path.read_bytes()
        for needle in (SECRET, PRINCIPAL.encode(), b"req-1", b"DETAIL-SECRET-91", b"10.0.0.7", b"ab" * 32):
            assert needle not in data, (needle, path)
    await log.aclose()
    assert SECRET not in paths.database.read_bytes()


async def test_bad_record_fails_alone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = AuditLog.open(settings)
    good = log.append(record(0))
    bad = log.append(AuditRecord("infer", summary={"when": object()}))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], AuditError) and "not JSON-serialisable" in str(results[1])
    await log.aclose()
    with raw(settings) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1


async def test_closed_log_refuses_and_disabled_log_records_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = AuditLog.open(settings)
    await log.aclose()
    with pytest.raises(AuditError, match="closed"):
        await log.append(record(0))
    disabled = open_audit_log(settings.replace("audit", enabled=False))
    await disabled.append(record(0))
    assert disabled.stats().records_written == 0


async def test_reopen_continues_the_chain_and_interval_checkpoint(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, checkpoint_every=10_000, checkpoint_interval_s=0.05)
    await fill(settings, 5)
    log = AuditLog.open(settings)
    await log.append(record(5))
    for _ in range(250):  # up to 5 s
        if log.stats().last_checkpoint_seq == 6:
            break
        await asyncio.sleep(0.02)
    assert log.stats().last_checkpoint_seq == 6  # signed by the timer, before close
    await log.aclose()
    report = check(settings)
    assert report.ok and report.rows == 6


def test_schema_is_versioned(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    AuditLog.open(settings).close()
    with raw(settings) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM migrations")]
        assert names == ["0001_initial", "0002_compact_records"]
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental: purges shrink the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("INSERT INTO migrations VALUES ('9999_future', 'x')")
    with pytest.raises(AuditError, match="newer release"):
        AuditLog.open(settings)


async def test_failed_commit_fails_the_waiters_and_the_writer_recovers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = AuditLog.open(settings)
    with raw(settings) as conn:  # a real SQLite failure inside the writer's transaction
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.action = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END")
    with pytest.raises(AuditError, match="simulated disk failure"):
        await log.append(AuditRecord("boom"))
    stats = log.stats()
    assert not stats.healthy and "simulated disk failure" in (stats.last_error or "")
    await log.append(record(1))
    assert log.stats().healthy and log.stats().records_written == 1
    await log.aclose()
    with raw(settings) as conn:
        conn.execute("DROP TRIGGER boom")
    assert check(settings).ok


async def test_two_writers_on_one_database_keep_one_chain(tmp_path: Path) -> None:
    """The CLI (rotate-key, purge) appends while the server runs: the head is read in each transaction."""
    settings = make_settings(tmp_path)
    server = AuditLog.open(settings)
    await server.append(record(0))
    other = AuditLog.open(settings)
    for i in range(1, 6):
        await asyncio.gather(server.append(record(i)), other.append(record(100 + i)))
    await other.aclose()
    await server.append(record(6))
    await server.aclose()
    report = check(settings)
    assert report.ok and report.rows == 12, report.problems


async def test_relaxed_records_are_committed_a_window_at_a_time(tmp_path: Path) -> None:
    """Nobody waits on a relaxed record, so the writer always holds the group-commit window: one
    commit per window, not one per loop iteration (each commit costs the one core ~400 µs)."""
    settings = make_settings(tmp_path, mode="relaxed", group_commit_ms=300.0)
    log = AuditLog.open(settings)
    try:
        for i in range(50):
            await log.append(record(i))
            await asyncio.sleep(0)  # each append in its own loop iteration
        for _ in range(200):
            if log.stats().records_written == 50:
                break
            await asyncio.sleep(0.025)
        stats = log.stats()
    finally:
        await log.aclose()
    assert stats.records_written == 50
    assert stats.commits <= 2, stats.commits
    assert check(settings).ok


async def test_a_large_group_is_inserted_in_chunks_and_verifies(tmp_path: Path) -> None:
    """A backlog bigger than one multi-row INSERT (1,024 rows) lands in one commit, in order."""
    settings = make_settings(tmp_path, mode="relaxed", group_commit_ms=200.0)
    log = AuditLog.open(settings)
    for i in range(2500):
        log.append_nowait(record(i, payload=None))
    await log.aclose()
    report = check(settings)
    assert report.ok, report.problems
    assert report.rows == 2500
    seqs = [row[0] for row in raw(settings).execute("SELECT seq FROM records ORDER BY rowid")]
    assert seqs == list(range(1, 2501))


async def test_flush_hint_ends_the_group_commit_window(tmp_path: Path) -> None:
    """Under load the writer holds a group open for ``group_commit_ms``; an appender that knows
    nobody else is coming (every request in flight waits on the log) ends the window at once."""
    settings = make_settings(tmp_path, group_commit_ms=800.0)
    log = AuditLog.open(settings)
    try:
        await asyncio.gather(*(log.append(record(i)) for i in range(4)))  # a group: the writer is "under load"
        started = asyncio.get_running_loop().time()
        await log.append(record(10))
        held = asyncio.get_running_loop().time() - started
        started = asyncio.get_running_loop().time()
        await log.append(record(11), flush=True)
        hurried = asyncio.get_running_loop().time() - started
    finally:
        await log.aclose()
    assert held >= 0.5, held  # the window was held open for a lone record after a group
    assert hurried < 0.4, hurried
    assert check(settings).ok


async def test_the_writer_thread_is_named_for_the_operating_system(tmp_path: Path) -> None:
    """`top -H` and `taskset -p` find the writer by name (Python alone names it only internally)."""
    log = AuditLog.open(make_settings(tmp_path))
    try:
        await log.append(record(0))
        assert "audit-writer" in os_thread_names()
    finally:
        await log.aclose()


@pytest.mark.usefixtures("sched_batch_allowed")
async def test_writer_thread_does_not_preempt_the_event_loop(tmp_path: Path) -> None:
    log = AuditLog.open(make_settings(tmp_path))
    try:
        await log.append(record(0))
        assert os.sched_getscheduler(log._writer.native_id or 0) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) != os.SCHED_BATCH
    finally:
        await log.aclose()
