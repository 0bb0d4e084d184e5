"""Administrative and lifecycle actions reach the audit log: server start/stop with the config
digest, model load/unload, predictions with a summary, API-key creation and revocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from appliance.app import create_app
from appliance.audit.keys import init_keys
from appliance.audit.requests import summarize
from appliance.config import Settings


def _appliance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120)


def _export(state: Path) -> list[dict]:
    result = _appliance("audit", "export", "--state-dir", str(state), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


async def test_server_lifecycle_and_predictions_are_audited(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = Settings().replace("server", models=repository, state_dir=state)
    init_keys(settings)
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        import asyncio

        for _ in range(3600):
            if (await client.get("/v2/health/ready")).status == 200:
                break
            await asyncio.sleep(0.05)
        x = np.load(repository / "digits" / "data" / "eval.npz")["input"][:2]
        response = await client.post("/v2/models/digits/infer", headers={"X-Request-ID": "audited-1"}, json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}]})
        assert response.status == 200
        refused = await client.post("/v2/models/digits/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 63}]})
        assert refused.status == 400
    finally:
        await client.close()
    rows = _export(state)
    actions = [r["action"] for r in rows]
    assert actions[0] == "server_start" and actions[-1] == "server_stop"
    assert "config sha256" in rows[0]["detail"]
    assert "model_load" in actions and "model_unload" in actions
    infer = next(r for r in rows if r.get("request_id") == "audited-1")
    assert infer["status"] == 200 and infer["model"] == "digits" and infer["version"] == "1"
    assert len(infer["input_sha256"]) == 64 and infer["summary"]["rows"] == 2
    assert any(r["action"] == "infer" and r["status"] == 400 for r in rows)
    assert _appliance("audit", "verify", "--state-dir", str(state)).returncode == 0


def test_api_key_creation_and_revocation_are_audited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _appliance("audit", "init-keys", "--state-dir", str(state)).returncode == 0
    created = _appliance("keys", "create", "--state-dir", str(state), "--name", "ops", "--scopes", "infer,read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert _appliance("keys", "revoke", "--state-dir", str(state), "ops").returncode == 0
    rows = _export(state)
    assert [r["action"] for r in rows] == ["key_create", "key_revoke"]
    assert "ops" in rows[0]["detail"] and rows[0]["principal"].startswith("cli:")
    assert key not in json.dumps(rows)  # the secret itself is never recorded


def test_summary_is_the_top_class_and_confidence_of_each_row() -> None:
    rng = np.random.default_rng(5)
    for rows in (1, 3, 40):
        scores = rng.random((rows, 10)).astype(np.float32)
        summary = summarize({"probabilities": scores})
        assert summary is not None
        shown = scores[:16]
        assert summary["rows"] == rows and summary["output"] == "probabilities"
        assert summary["top_class"] == shown.argmax(axis=1).tolist()
        assert summary["confidence"] == [round(float(v), 4) for v in shown.max(axis=1)]
    assert summarize({"embedding": np.zeros((2, 1), np.float32)}) == {"output": "embedding", "shape": [2, 1]}
    assert summarize(None) is None
