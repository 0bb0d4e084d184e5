"""The status page shows the audit log's storage: size, limit, growth, free space, the forecast,
and the warning when the size limit came before the age limit (real headless Chromium)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from server_load import Load, audited_settings, prefill, serving, wait_for_purge

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian package 'chromium' not installed")


async def test_status_page_shows_audit_storage(repository: Path, tmp_path: Path) -> None:
    settings = audited_settings(repository, tmp_path / "state", max_bytes=600_000, retention_check_interval_s=0.2)
    await prefill(settings, 4000)
    errors: list[str] = []
    async with serving(settings) as client:
        load = Load.start(client, repository, workers=2)
        await wait_for_purge(client)
        await asyncio.sleep(0.5)
        await load.stop()
        async with playwright_api.async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                str(tmp_path / "chromium"), executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(str(client.make_url("/")))
                await page.wait_for_function("() => Number(document.body.dataset.rendered || 0) >= 1", timeout=20_000)
                audit = await page.text_content("[data-testid=audit]") or ""
            finally:
                await context.close()
    assert not errors, errors
    for label in ("healthy", "Database", "586 KiB limit", "Growth", "Free on its disk", "Limit reached in",
                  "Disk full in", "size limit reached before the age limit", "Last purge"):
        assert label in audit, (label, audit)
