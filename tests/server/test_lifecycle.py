"""Process lifecycle with real subprocess servers: SIGTERM drains without losing admitted work;
SIGKILL under strict audit loses no record of an answered request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from conftest import ServerProcess, start_server, stop_server
from server_testlib import eval_rows, publish_heavy_model


def _post(url: str, doc: dict, request_id: str, timeout: float = 30) -> int:
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Request-ID": request_id,
                                              "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1  # connection refused/reset: never admitted


def _appliance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120)


def test_sigterm_finishes_admitted_requests_then_exits_zero(repository: Path, tmp_path: Path) -> None:
    publish_heavy_model(repository, width=2048, layers=16)
    server = start_server(repository, tmp_path / "state", extra_env={"APPLIANCE_RUNTIME_NIREQ": "1"})
    try:
        x = np.random.default_rng(2).standard_normal((64, 2048)).astype(np.float32)
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [64, 2048], "data": x.ravel().tolist()}]}
        url = f"{server.url}/v2/models/heavy/infer"
        results: dict[int, int] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _post(url, doc, f"in-flight-{i}")))
                   for i in range(12)]
        for thread in threads:
            thread.start()
        admitted = _wait_for_in_flight(server, 3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        late = _post(url, doc, "late")
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
    assert _appliance("audit", "init-keys", "--state-dir", str(state)).returncode == 0
    env = {"APPLIANCE_AUDIT_ENABLED": "true", "APPLIANCE_AUDIT_MODE": "strict"}
    server = start_server(repository, state, extra_env=env)
    x, _ = eval_rows(repository, 4)
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 64], "data": x.ravel().tolist()}]}
    answered: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            request_id = f"w{worker}-{n}"
            if _post(f"{server.url}/v2/models/digits/infer", doc, request_id, timeout=10) == 200:
                answered.append(request_id)
            n += 1

    workers = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    stop.set()
    for worker in workers:
        worker.join(30)
    assert len(answered) > 50
    export = _appliance("audit", "export", "--state-dir", str(state), "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    recorded = {json.loads(line).get("request_id") for line in export.stdout.splitlines() if line.strip()}
    missing = [r for r in answered if r not in recorded]
    assert not missing, f"{len(missing)} answered requests have no audit record: {missing[:5]}"
    verify = _appliance("audit", "verify", "--state-dir", str(state))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # and the server starts again on the same log
    again = start_server(repository, state, extra_env=env)
    try:
        assert _post(f"{again.url}/v2/models/digits/infer", doc, "after-restart") == 200
    finally:
        assert stop_server(again) == 0
    assert _appliance("audit", "verify", "--state-dir", str(state)).returncode == 0
