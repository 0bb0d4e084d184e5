"""Process lifecycle with real subprocess servers: SIGTERM drains without losing admitted work;
SIGKILL under strict audit loses no record of an answered request."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from conftest import ServerProcess, start_server, stop_server
from server_testlib import (
    AnsweredLoad,
    appliance_cli,
    assert_every_answer_audited,
    eval_rows,
    post_with_id,
    publish_heavy_model,
)


def test_sigterm_finishes_admitted_requests_then_exits_zero(repository: Path, tmp_path: Path) -> None:
    publish_heavy_model(repository, width=2048, layers=16)
    # Every client let in: the adaptive limit would hold a cold model to one request at a time
    # while it measures the no-load latency, and this test needs several in flight at SIGTERM.
    server = start_server(repository, tmp_path / "state",
                          extra_env={"APPLIANCE_RUNTIME_NIREQ": "1", "APPLIANCE_LIMITS_ADAPTIVE": "false"})
    try:
        x = np.random.default_rng(2).standard_normal((64, 2048)).astype(np.float32)
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [64, 2048], "data": x.ravel().tolist()}]}
        url = f"{server.url}/v2/models/heavy/infer"
        results: dict[int, int] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, post_with_id(url, doc, f"in-flight-{i}")))
                   for i in range(12)]
        for thread in threads:
            thread.start()
        admitted = _wait_for_in_flight(server, 3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        late = post_with_id(url, doc, "late")
        for thread in threads:
            thread.join(60)
        assert server.process.wait(60) == 0
        # Every admitted request is answered; the rest were refused with 503 (never dropped).
        assert set(results.values()) <= {200, 503}, results
        assert list(results.values()).count(200) >= admitted, (admitted, results)
        assert late in (503, -1)
        log = server.log()
        assert '"msg":"draining"' in log and '"drained":true' in log
    finally:
        stop_server(server)


def _wait_for_in_flight(server: ServerProcess, count: int, timeout: float = 30) -> int:
    """Poll the status JSON until the server has admitted ``count`` requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith('appliance_in_flight_requests{model="heavy"}') and float(line.split()[-1]) >= count:
                return int(float(line.split()[-1]))
        time.sleep(0.02)
    raise TimeoutError(f"{count} requests never in flight:\n{text}")


def test_sigkill_under_strict_audit_loses_no_answered_request(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert appliance_cli("audit", "init-keys", "--state-dir", str(state)).returncode == 0
    env = {"APPLIANCE_AUDIT_ENABLED": "true", "APPLIANCE_AUDIT_MODE": "strict"}
    server = start_server(repository, state, extra_env=env)
    x, _ = eval_rows(repository, 4)
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 64], "data": x.ravel().tolist()}]}
    load = AnsweredLoad(f"{server.url}/v2/models/digits/infer", doc, clients=8)
    load.start()
    time.sleep(2.0)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    answered = load.stop()
    assert len(answered) > 50
    assert_every_answer_audited(state, answered)
    # and the server starts again on the same log
    again = start_server(repository, state, extra_env=env)
    try:
        assert post_with_id(f"{again.url}/v2/models/digits/infer", doc, "after-restart") == 200
    finally:
        assert stop_server(again) == 0
    assert appliance_cli("audit", "verify", "--state-dir", str(state)).returncode == 0
