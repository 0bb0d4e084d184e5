"""``server.workers = 2``: one port served by two forked worker processes under a supervisor.

Real servers on 127.0.0.1: requests reach both workers, metrics and the status page add them up,
a model load or unload made through one holds on both (and on a worker restarted after it), a
worker killed with SIGKILL is restarted while the other keeps answering, and SIGTERM drains all.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import ServerProcess, start_server, stop_server
from server_testlib import AnsweredLoad, appliance_cli, assert_every_answer_audited

from appliance.config import load_settings
from appliance.processes.merge import merge_expositions
from appliance.processes.plan import plan_workers
from appliance.processes.unloaded import UnloadedModels

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})


def call(server: ServerProcess, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    """One request on a fresh connection: the kernel picks a worker per connection."""
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.startswith((b"{", b"[")) else {"text": raw.decode()}
    finally:
        connection.close()


def pids_answering(server: ServerProcess, tries: int = 60) -> set[int]:
    return {call(server, "GET", "/v2/status")[1]["pid"] for _ in range(tries)}


def worker_pids(server: ServerProcess) -> list[int]:
    return [w["pid"] for w in call(server, "GET", "/v2/status")[1]["workers"]]


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture
def two_workers(repository: Path, tmp_path: Path):
    server = start_server(repository, tmp_path / "state", extra_env={"APPLIANCE_SERVER_WORKERS": "2"})
    yield server
    stop_server(server)


def test_both_workers_answer_and_the_server_reports_as_one(two_workers: ServerProcess) -> None:
    pids = pids_answering(two_workers)
    assert len(pids) == 2, pids
    assert sorted(pids) == sorted(worker_pids(two_workers))
    for _ in range(30):
        assert call(two_workers, "POST", "/v2/models/digits/infer", BODY)[0] == 200
    status = call(two_workers, "GET", "/v2/status")[1]
    assert [w["health"] for w in status["workers"]] == ["ok", "ok"]
    assert status["memory"]["processes"] == 3  # supervisor + 2 workers (audit off here)
    assert 0 < status["memory"]["pss_bytes"] < status["memory"]["rss_bytes"]  # forked pages shared
    metrics = call(two_workers, "GET", "/metrics")[1]["text"]
    # Every scrape sums both workers, whichever answers it.
    assert metric_sum(metrics, "appliance_requests_total", model="digits", protocol="rest", status="200") == 30
    assert 'appliance_ready{worker="0"} 1.0' in metrics and 'appliance_ready{worker="1"} 1.0' in metrics


def test_unload_and_load_hold_on_every_worker_even_one_restarted(two_workers: ServerProcess) -> None:
    assert call(two_workers, "POST", "/v2/repository/models/digits/unload")[0] == 200
    for _ in range(20):  # fresh connections reach both workers
        status, _ = call(two_workers, "POST", "/v2/models/digits/infer", BODY)
        assert status in (400, 404, 503), status
    first, second = worker_pids(two_workers)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)  # connections queued on the killed worker's socket at the kill are reset
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = worker_pids(two_workers)
        if first not in pids and None not in pids:
            break
        time.sleep(0.2)
    assert first not in worker_pids(two_workers) and second in worker_pids(two_workers)
    index = [call(two_workers, "POST", "/v2/repository/index")[1] for _ in range(20)]
    assert all(row[0]["state"] == "UNAVAILABLE" for row in index), index  # the restarted one too
    assert call(two_workers, "POST", "/v2/repository/models/digits/load")[0] == 200
    for _ in range(20):
        assert call(two_workers, "POST", "/v2/models/digits/infer", BODY)[0] == 200


def test_a_killed_worker_does_not_disturb_the_other(two_workers: ServerProcess) -> None:
    victim, survivor = worker_pids(two_workers)
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)  # its socket has left the port's group: new connections reach the survivor
    answers = [call(two_workers, "POST", "/v2/models/digits/infer", BODY)[0] for _ in range(40)]
    assert answers == [200] * 40
    deadline = time.monotonic() + 30
    while len(pids_answering(two_workers, 20)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert survivor in pids_answering(two_workers) and len(pids_answering(two_workers)) == 2
    assert "exited: restarting" in two_workers.log()


def test_sigterm_drains_every_process(two_workers: ServerProcess) -> None:
    pids = worker_pids(two_workers)
    assert stop_server(two_workers) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert two_workers.log().count('"msg":"stopped","drained":true') == 2


def test_strict_audit_through_the_writer_process_survives_sigkill_of_a_worker_and_the_writer(
        repository: Path, tmp_path: Path) -> None:
    """Workers hand their records to the one audit writer process; strict mode answers only after
    its commit, so SIGKILL of a worker and then of the writer, under load, loses no answered request
    and the chain verifies."""
    state = tmp_path / "state"
    assert appliance_cli("audit", "init-keys", "--state-dir", str(state)).returncode == 0
    server = start_server(repository, state, extra_env={
        "APPLIANCE_SERVER_WORKERS": "2", "APPLIANCE_AUDIT_ENABLED": "true", "APPLIANCE_AUDIT_MODE": "strict"})
    load = AnsweredLoad(f"{server.url}/v2/models/digits/infer", json.loads(BODY), clients=6)
    try:
        load.start()
        time.sleep(1.5)
        os.kill(worker_pids(server)[0], signal.SIGKILL)
        time.sleep(1.5)
        writer = [p for p in _children(server.process.pid) if p not in worker_pids(server)]
        assert len(writer) == 1, writer
        os.kill(writer[0], signal.SIGKILL)
        time.sleep(2.0)
    finally:
        answered = load.stop()
        assert stop_server(server) == 0
    assert len(answered) > 100
    assert_every_answer_audited(state, answered)
    assert server.log().count("exited: restarting") == 2


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children()]


def test_a_worker_that_cannot_start_stops_the_server(repository: Path, tmp_path: Path) -> None:
    """A configuration only the workers find wrong (here: a missing TLS file) ends the start
    with the worker's exit code instead of restarting it forever."""
    config = tmp_path / "bad.toml"
    config.write_text(f'[tls]\ncert_file = "{tmp_path / "missing.pem"}"\nkey_file = "{tmp_path / "missing.key"}"\n')
    with pytest.raises(RuntimeError, match="server failed to start"):
        start_server(repository, tmp_path / "state", config=config, extra_env={"APPLIANCE_SERVER_WORKERS": "2"})


def test_auto_follows_cores_and_memory(repository: Path, tmp_path: Path) -> None:
    settings = load_settings(None).replace("server", models=repository, workers="auto")
    roomy = plan_workers(settings, available_bytes=64 << 30)
    assert roomy.workers == roomy.cores and roomy.threads_per_worker == 1
    tight = plan_workers(settings, available_bytes=200 << 20)
    assert (tight.workers == 1 and "memory" in tight.reason) or tight.cores == 1
    fixed = plan_workers(settings.replace("server", workers="3"), available_bytes=1 << 20)
    assert fixed.workers == 3


def test_unloads_are_remembered_for_the_whole_server(tmp_path: Path) -> None:
    unloaded = UnloadedModels(tmp_path)
    unloaded.record("unload", "a")
    unloaded.record("unload", "b")
    unloaded.record("load", "a")
    assert unloaded.names() == {"b"}


def test_metrics_merge_adds_counters_and_labels_gauges() -> None:
    one = ('# TYPE r counter\nr_total{m="x"} 2.0\n# TYPE g gauge\ng 1.0\n'
           '# TYPE appliance_audit_records counter\nappliance_audit_records_total 7.0\n')
    two = ('# TYPE r counter\nr_total{m="x"} 3.0\n# TYPE g gauge\ng 0.0\n'
           '# TYPE appliance_audit_records counter\nappliance_audit_records_total 7.0\n')
    text = merge_expositions([("0", one), ("1", two)]).decode()
    assert 'r_total{m="x"} 5.0' in text
    assert 'g{worker="0"} 1.0' in text and 'g{worker="1"} 0.0' in text
    assert "appliance_audit_records_total 7.0" in text  # the one writer's figure, not 14


def test_the_status_page_shows_the_server_and_each_worker(two_workers: ServerProcess, tmp_path: Path) -> None:
    """In real headless Chromium: the page of a 2-worker server lists both workers with their
    traffic and the server's memory, whichever worker served the page."""
    import asyncio
    import shutil

    playwright_api = pytest.importorskip("playwright.async_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian package 'chromium' not installed")
    for _ in range(40):
        assert call(two_workers, "POST", "/v2/models/digits/infer", BODY)[0] == 200

    async def look() -> tuple[str, list[str], str]:
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = await browser.new_page()
                await page.goto(two_workers.url + "/")
                # the per-worker counts come from each worker's sampler (about one sample a second)
                counted = """() => [...document.querySelectorAll('[data-testid=workers] td.requests')]
                    .reduce((n, td) => n + Number(td.textContent.replace(/,/g, '')), 0) >= 40"""
                await page.wait_for_function(counted, timeout=20_000)
                rows = page.locator("[data-testid=workers] tbody tr")
                texts = [await rows.nth(i).inner_text() for i in range(await rows.count())]
                return (await page.text_content("#process") or "", texts,
                        await page.text_content("[data-testid=total-requests]") or "")
            finally:
                await browser.close()

    process, workers, total = asyncio.run(look())
    assert "3 processes" in process and "proportional" in process
    assert len(workers) == 2 and all("ok" in row for row in workers), workers
    per_worker = [int(row.split("\t")[5].replace(",", "")) for row in workers]
    assert sum(per_worker) >= 40 and int(total.replace(",", "")) >= 40


def test_a_job_submitted_to_one_worker_is_seen_and_cancelled_through_any(repository: Path, tmp_path: Path) -> None:
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    x = np.load(repository / "digits" / "data" / "eval.npz")["input"].astype(np.float32)
    np.save(data / "in.npy", np.tile(x, (200, 1)))  # long enough to still run while we look
    server = start_server(repository, tmp_path / "state", extra_env={
        "APPLIANCE_SERVER_WORKERS": "2", "APPLIANCE_JOBS_DATA_DIR": str(data)})
    try:
        status, job = call(server, "POST", "/v2/jobs", json.dumps({"model": "digits", "input": "in.npy",
                                                                   "output": "out"}))
        assert status == 201, job
        for _ in range(20):  # fresh connections: both workers answer for it
            status, seen = call(server, "GET", f"/v2/jobs/{job['id']}")
            assert status == 200 and seen["id"] == job["id"], seen
            listed = call(server, "GET", "/v2/jobs")[1]["jobs"]
            assert [j["id"] for j in listed] == [job["id"]]
        status, cancelled = call(server, "DELETE", f"/v2/jobs/{job['id']}")
        assert status == 200 and cancelled["state"] in ("cancelled", "done"), cancelled
        assert call(server, "GET", "/v2/jobs/nope")[0] == 404
    finally:
        stop_server(server)


def test_max_running_jobs_holds_for_the_whole_server(repository: Path, tmp_path: Path) -> None:
    """jobs.max_running = 1 with 2 workers: six jobs submitted over fresh connections, which the
    kernel spreads over both workers (all six on one has odds of 1 in 32), never run two at once."""
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    x = np.load(repository / "digits" / "data" / "eval.npz")["input"].astype(np.float32)
    np.save(data / "in.npy", np.tile(x, (40, 1)))
    server = start_server(repository, tmp_path / "state", extra_env={
        "APPLIANCE_SERVER_WORKERS": "2", "APPLIANCE_JOBS_DATA_DIR": str(data), "APPLIANCE_JOBS_MAX_RUNNING": "1"})
    try:
        for i in range(6):
            status, job = call(server, "POST", "/v2/jobs", json.dumps({"model": "digits", "input": "in.npy",
                                                                       "output": f"out{i}"}))
            assert status == 201, job
        most = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = call(server, "GET", "/v2/jobs")[1]["jobs"]
            most = max(most, sum(j["state"] == "running" for j in jobs))
            if len(jobs) == 6 and all(j["state"] in ("done", "failed", "cancelled") for j in jobs):
                break
            time.sleep(0.05)
        assert [j["state"] for j in jobs] == ["done"] * 6, jobs
        assert most == 1
    finally:
        stop_server(server)


def test_job_slots_are_exclusive_and_come_back(tmp_path: Path) -> None:
    from appliance.processes.jobslots import JobSlots

    one, other = JobSlots(tmp_path, 1), JobSlots(tmp_path, 1)  # as two workers see the same folder
    held = one.try_take()
    assert held is not None and other.try_take() is None
    JobSlots.release(held)
    again = other.try_take()
    assert again is not None
    JobSlots.release(again)


def test_fixed_admission_caps_are_split_across_workers(repository: Path, tmp_path: Path) -> None:
    """limits.max_concurrency = 6 with 2 workers: each admits 3, so the server admits 6."""
    server = start_server(repository, tmp_path / "state", extra_env={
        "APPLIANCE_SERVER_WORKERS": "2", "APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": "6"})
    try:
        for _ in range(20):  # a version's admission is built with its first request, on each worker
            assert call(server, "POST", "/v2/models/digits/infer", BODY)[0] == 200
        metrics = call(server, "GET", "/metrics")[1]["text"]
        assert 'appliance_admission_limit{model="digits",worker="0"} 3.0' in metrics, metrics
        assert 'appliance_admission_limit{model="digits",worker="1"} 3.0' in metrics
    finally:
        stop_server(server)
