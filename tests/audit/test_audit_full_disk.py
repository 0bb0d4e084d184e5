"""A full file system under load: strict audit answers only 200 or 503, readiness is 503 with the
reason while full, the server serves again within seconds once space returns, nothing
acknowledged is lost and the log verifies. The audit database lives on a small tmpfs the test
mounts (root only; skipped where mounting is not permitted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_testlib import check
from server_load import Load, audited_settings, serving

from appliance.audit import audit_paths
from appliance.audit.export import records as exported
from appliance.audit.keys import KEY_FILE, load_keyring


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount not permitted here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_up(path: Path) -> int:
    """Write a ballast file until the file system refuses (ENOSPC)."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as handle:
        while True:
            try:
                written += handle.write(chunk)
            except OSError:
                break
    with contextlib.suppress(OSError), path.open("ab", buffering=0) as handle:
        while handle.write(b"\0" * 512):  # the last partial chunk too
            pass
    return written


async def _ready(client: object) -> tuple[int, dict]:
    response = await client.get("/v2/health/ready")  # type: ignore[attr-defined]
    return response.status, await response.json()


async def _wait_status(client: object, status: int, within_s: float) -> tuple[float, dict]:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        code, body = await _ready(client)
        if code == status:
            return time.monotonic() - start, body
        await asyncio.sleep(0.05)
    raise AssertionError(f"readiness did not become {status} within {within_s}s")


def _disk_full(reason: str) -> bool:
    """SQLite says "database or disk is full"; a checkpoint write that hits the limit first says ENOSPC."""
    return "full" in reason or "No space left on device" in reason


async def test_full_disk_under_load(repository: Path, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small") as small:
        settings = audited_settings(repository, tmp_path / "state", database=small / "audit.db",
                                    max_bytes=10**12, retention_check_interval_s=3600.0)
        ballast = small / "ballast"
        async with serving(settings) as client:
            load = Load.start(client, repository)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(fill_up, ballast)
            _, body = await _wait_status(client, 503, 10.0)
            assert _disk_full(body["reason"]), body
            assert (await client.get("/v2/health/live")).status == 200
            status = await (await client.get("/v2/status")).json()
            assert status["server"]["health"] == "unavailable" and _disk_full(status["audit"]["reason"])
            await asyncio.sleep(1.0)  # full for a while, under load
            ballast.unlink()
            recovered_s, _ = await _wait_status(client, 200, 5.0)
            served_before = load.statuses[200]
            await asyncio.sleep(0.5)
            assert load.statuses[200] > served_before, "serving again after space returned"
            statuses = await load.stop()
        assert set(statuses) <= {200, 503} and statuses[503] > 0, statuses
        assert recovered_s < 5.0
        report = check(settings)
        assert report.ok, report.problems
        keyring = load_keyring(settings.server.state_dir / "keys" / KEY_FILE)
        audited = sum(1 for r in exported(audit_paths(settings).database, keyring)
                      if r["action"] == "infer" and r["status"] == 200)
        assert audited == statuses[200], (audited, statuses)  # every acknowledged answer is on disk
