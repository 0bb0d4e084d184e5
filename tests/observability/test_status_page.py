"""The status page in real headless Chromium (Debian's package, driven by Playwright; never a browser
download) against a real server with real traffic: it shows the models, non-zero request counts and
charts with pixels on them. Screenshots land in test-artifacts/ (desktop and phone widths)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from obs_testlib import build_repository, drive_traffic, eval_data, infer_body, settings_for, start_client, with_api_key

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian package 'chromium' not installed")

#: Counts canvas pixels that differ from transparent: a drawn chart has thousands.
INKED_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
  return n;
}"""


async def _background_traffic(client: TestClient, x: np.ndarray, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        version = "2" if i % 3 else "1"
        await client.post(f"/v2/models/digits/versions/{version}/infer", json=infer_body(x[i % 200:i % 200 + 4]))
        i += 1
        await asyncio.sleep(0.01)


async def test_status_page_in_chromium(digits_repository: Path, tmp_path: Path) -> None:
    repository = build_repository(digits_repository, tmp_path / "models")
    client = await start_client(settings_for(repository, tmp_path / "state"))
    x, _ = eval_data(digits_repository)
    stop = asyncio.Event()
    traffic = asyncio.create_task(_background_traffic(client, x, stop))
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    try:
        await drive_traffic(client, x)
        await asyncio.sleep(1.5)  # a few history samples with traffic in them
        url = str(client.make_url("/"))
        async with playwright_api.async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                str(tmp_path / "chromium"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900})
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                requests: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                await page.goto(url)
                await page.wait_for_function("() => Number(document.body.dataset.rendered || 0) >= 3", timeout=20_000)

                assert await page.text_content("[data-testid=health]") == "ok"
                rows = page.locator("[data-testid=models] tbody tr")
                assert await rows.count() == 3  # digits v1, v2 and tight v1
                for model, version in (("digits", "1"), ("digits", "2"), ("tight", "1")):
                    row = page.locator(f"tr[data-model={model}][data-version='{version}']")
                    assert "READY" in await row.inner_text()
                    assert "CPU" in await row.inner_text()
                    assert int((await row.locator("td.requests").inner_text()).replace(",", "")) > 0
                total = int((await page.text_content("[data-testid=total-requests]") or "0").replace(",", ""))
                assert total > 100
                # drive_traffic's one 400 and one 404 are client errors; no server error, no auth refusal.
                assert await page.text_content("#k-client-n") == "2 total"
                assert await page.text_content("#k-errors-n") == "0 total"
                assert await page.text_content("#k-auth-n") == "0 total"
                admission = page.locator("[data-testid=admission] tbody tr")
                assert await admission.count() == 2  # digits and tight
                mode = await page.locator("#admission tr[data-model=tight] td").last.inner_text()
                assert mode in ("fixed", "adaptive")
                for chart in ("c-rps", "c-lat", "c-rates", "c-queue"):
                    assert await page.evaluate(INKED_PIXELS, chart) > 500, chart
                assert await page.locator("[data-testid=quality-card]").count() >= 2
                assert "disabled" in (await page.text_content("[data-testid=audit]") or "")
                hardware = await page.text_content("#hardware") or ""
                assert "Instruction sets" in hardware and "OpenVINO devices" in hardware
                await page.screenshot(path=str(ARTIFACTS / "status-desktop.png"), full_page=True)

                await page.set_viewport_size({"width": 390, "height": 844})
                await page.wait_for_function("() => Number(document.body.dataset.rendered || 0) >= 4", timeout=10_000)
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
                assert await page.evaluate(INKED_PIXELS, "c-lat") > 500
                await page.screenshot(path=str(ARTIFACTS / "status-phone.png"), full_page=True)
                await page.screenshot(path=str(ARTIFACTS / "status-phone-top.png"))
                await page.locator("[data-testid=models]").screenshot(path=str(ARTIFACTS / "status-phone-models.png"))
                assert all(r.startswith(url.rstrip("/")) for r in requests), "the page reached outside its origin"
            finally:
                await context.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await traffic
        await client.close()
    assert errors == []


async def test_sign_in_shows_no_errors(digits_repository: Path, tmp_path: Path) -> None:
    """With authentication on, the page's first request (before a key is typed) is answered 401;
    after the key is entered the tiles must not read "100 % errors" for it."""
    repository = build_repository(digits_repository, tmp_path / "models")
    state = tmp_path / "state"
    state.mkdir()
    settings, key = with_api_key(settings_for(repository, state), state)
    client = await start_client(settings)
    x, _ = eval_data(digits_repository)
    auth = {"Authorization": f"Bearer {key}"}
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    try:
        for i in range(0, 40, 4):
            response = await client.post("/v2/models/digits/infer", headers=auth, json=infer_body(x[i:i + 4]))
            assert response.status == 200
        async with playwright_api.async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                str(tmp_path / "chromium"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900})
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(str(client.make_url("/")))
                await page.locator("#login").wait_for(state="visible", timeout=10_000)
                await page.fill("#apikey", key)
                await page.click("#login button")
                await page.wait_for_function("() => Number(document.body.dataset.rendered || 0) >= 2", timeout=20_000)
                await page.wait_for_function(
                    "() => document.getElementById('k-total').textContent === '10'", timeout=10_000)
                assert await page.is_hidden("#login")
                assert await page.text_content("[data-testid=server-errors]") == "0.0%"
                assert await page.text_content("[data-testid=auth-refusals]") == "0.0%"
                assert await page.text_content("#k-auth-n") == "0 total"
                assert "bad" not in (await page.get_attribute("#k-errors", "class") or "")
                await page.screenshot(path=str(ARTIFACTS / "status-signed-in.png"), full_page=True)
            finally:
                await context.close()
        metrics = await (await client.get("/metrics", headers=auth)).text()
        assert 'appliance_http_errors_total{class="auth"' not in metrics
    finally:
        await client.close()
    assert errors == []
