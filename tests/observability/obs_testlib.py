"""Helpers for the observability tests: a repository with a baseline-carrying version and a tightly
limited model, an in-process server on 127.0.0.1, and real traffic."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from aiohttp.test_utils import TestClient, TestServer

from appliance.app import create_app
from appliance.config import Settings
from modelrepo import Manifest, publish_version, staging_directory

TIGHT_LIMITS = "\n[limits]\nmax_concurrency = 1\nmax_queue = 0\n"


def eval_data(repository: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(repository / "digits" / "data" / "eval.npz")
    return data["input"].astype(np.float32), data["labels"]


def _baseline(repository: Path) -> dict[str, Any]:
    """What the optimizer records: class mix and input statistics of the model on evaluation data."""
    x, _ = eval_data(repository)
    session = ort.InferenceSession(str(repository / "digits" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    probs = session.run(None, {"input": x})[0]
    classes = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    return {"rows": len(x), "input_mean": float(x.mean()), "input_std": float(x.std()),
            "class_distribution": (classes / classes.sum()).tolist()}


def build_repository(source: Path, target: Path) -> Path:
    """digits v1 (no baseline) + v2 (same graph, manifest with a drift baseline); ``tight`` (digits with
    one slot and no queue, so concurrent requests are refused with 429)."""
    shutil.copytree(source, target)
    model_dir = target / "digits"
    toml = (model_dir / "model.toml").read_text()
    start = toml.index("[version_policy]")
    end = toml.index("\n\n", start)
    (model_dir / "model.toml").write_text(toml[:start] + "[version_policy]\nall = true" + toml[end:])
    with staging_directory(model_dir) as staging:
        shutil.copyfile(model_dir / "1" / "model.onnx", staging / "model.onnx")
        Manifest.for_directory(staging, format="onnx", precision="fp32", model_file="model.onnx", parent_version=1,
                               metrics={"baseline": _baseline(target)}).write(staging)
        publish_version(model_dir, staging)
    tight = target / "tight"
    tight.mkdir()
    shutil.copytree(model_dir / "1", tight / "1")
    (tight / "model.toml").write_text(toml.replace("enabled = true", "enabled = false") + TIGHT_LIMITS)
    return target


def settings_for(models: Path, state: Path, **observability: Any) -> Settings:
    settings = Settings().replace("server", models=models, state_dir=state).replace("audit", enabled=False)
    return settings.replace("observability", status_interval_s=0.5, **observability)


def with_api_key(settings: Settings, state: Path) -> tuple[Settings, str]:
    """Authentication on, and one key with the ``read`` and ``infer`` scopes made by the real CLI."""
    import contextlib
    import io

    from appliance.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["keys", "create", "--name", "viewer", "--scopes", "read,infer", "--state-dir", str(state)])
    assert code == 0
    return settings.replace("auth", enabled=True), out.getvalue().strip()


async def start_client(settings: Settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    for _ in range(600):
        if (await client.get("/v2/health/ready")).status == 200:
            return client
        await asyncio.sleep(0.05)
    raise TimeoutError("server not ready")


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}]}


async def drive_traffic(client: TestClient, x: np.ndarray) -> dict[str, int]:
    """Successes on both digits versions, cache hits, client errors, 404s and 429s from ``tight``."""
    counts = {"ok": 0, "bad": 0, "missing": 0, "rejected": 0}
    for i in range(0, 160, 8):
        for version in ("1", "2"):
            response = await client.post(f"/v2/models/digits/versions/{version}/infer", json=infer_body(x[i:i + 8]))
            assert response.status == 200, await response.text()
            counts["ok"] += 1
    for _ in range(3):  # the same input again: cache hits
        assert (await client.post("/v2/models/digits/versions/1/infer", json=infer_body(x[:8]))).status == 200
        counts["ok"] += 1
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert (await client.post("/v2/models/digits/infer", json=bad)).status == 400
    counts["bad"] += 1
    assert (await client.post("/v2/models/nope/infer", json=bad)).status == 404
    counts["missing"] += 1
    responses = await asyncio.gather(*(client.post("/v2/models/tight/infer", json=infer_body(x[:64]))
                                       for _ in range(48)))
    statuses = [r.status for r in responses]
    counts["rejected"] = statuses.count(429)
    counts["ok"] += statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    return counts


def start_subprocess_server(models: Path, state: Path, env: dict[str, str]) -> tuple[Any, str, Path]:
    """``appliance serve`` as a real process on a free loopback port; returns (process, url, log path)."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "server.log"
    command = [sys.executable, "-m", "appliance", "serve", "--models", str(models), "--state-dir", str(state),
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "APPLIANCE_AUDIT_ENABLED": "false", **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return process, url, log_path
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
