"""The jobs API on a real server on 127.0.0.1: a job's outputs equal the runtime's, it is audited
once, shown on the status page, confined to jobs.data_dir, scoped to the model, and cancellable."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batch_testlib import digits_rows, read_output, reference, started_client, write_input

from appliance.audit.keys import init_keys
from appliance.cli import main
from appliance.config import Settings


def _settings(repository: Path, tmp_path: Path, audit: bool = False, **jobs: Any) -> Settings:
    settings = Settings().replace("server", models=repository, state_dir=tmp_path / "state").replace(
        "audit", enabled=audit).replace("jobs", data_dir=tmp_path / "data", **jobs)
    (tmp_path / "data").mkdir(exist_ok=True)
    return settings


async def _wait(client: Any, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    for _ in range(1200):
        doc = await (await client.get(f"/v2/jobs/{job_id}", headers=headers)).json()
        if doc["state"] in ("done", "failed", "cancelled"):
            return doc
        await asyncio.sleep(0.05)
    raise TimeoutError(doc)


async def test_a_job_equals_the_runtime_is_audited_once_and_shown(repository: Path, tmp_path: Path) -> None:
    settings = _settings(repository, tmp_path, audit=True)
    init_keys(settings)
    x = digits_rows(repository, 3000)
    write_input(x, tmp_path / "data", "parquet")
    client = await started_client(settings)
    try:
        response = await client.post("/v2/jobs", json={"model": "digits", "input": "in.parquet", "output": "out"})
        assert response.status == 201, await response.text()
        job = await _wait(client, (await response.json())["id"])
        assert job["state"] == "done" and job["rows_done"] == 3000 and job["version"] == "1", job
        listed = await (await client.get("/v2/jobs")).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]]
        status = await (await client.get("/v2/status")).json()
        assert status["jobs"][0]["id"] == job["id"] and status["jobs"][0]["state"] == "done"
    finally:
        await client.close()
    ids, probabilities = read_output(tmp_path / "data" / "out")
    assert ids.tolist() == list(range(3000))
    assert np.array_equal(probabilities, reference(repository, tmp_path, x))  # same requests of 64 rows
    command = [sys.executable, "-m", "appliance", "audit", "export", "--state-dir", str(tmp_path / "state"),
               "--format", "jsonl"]
    exported = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120,
                                       check=True, env={**os.environ, "APPLIANCE_AUDIT_ENABLED": "true"})
    rows = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    jobs = [r for r in rows if r["action"] == "batch_job"]
    assert len(jobs) == 1 and not [r for r in rows if r["action"] == "infer"]  # one record, not one per request
    record = jobs[0]
    assert record["status"] == 200 and record["model"] == "digits" and record["version"] == "1"
    assert record["principal"] == "anonymous" and record["summary"]["rows"] == 3000
    assert len(record["input_sha256"]) == 64 and len(record["output_sha256"]) == 64
    assert len(record["summary"]["manifest_sha256"]) == 64


async def test_paths_are_confined_to_the_data_folder(repository: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_input(digits_rows(repository, 10), outside, "npy")
    settings = _settings(repository, tmp_path)
    (tmp_path / "data" / "link").symlink_to(outside)
    write_input(digits_rows(repository, 10), tmp_path / "data", "npy")
    client = await started_client(settings)
    try:
        for source, target in [("../outside/in.npy", "out"), (str(outside / "in.npy"), "out"),
                               ("link/in.npy", "out"), ("in.npy", "link/out"), ("in.npy", "../out"),
                               ("in.npy", "."), ("missing.npy", "out")]:
            response = await client.post("/v2/jobs", json={"model": "digits", "input": source, "output": target})
            assert response.status == 400, (source, target, await response.text())
        assert not (outside / "out").exists()
        bad = await client.post("/v2/jobs", json={"model": "digits", "input": "in.npy", "output": "o", "nope": 1})
        assert bad.status == 400
        unknown = await client.get("/v2/jobs/0123456789ab")
        assert unknown.status == 404
    finally:
        await client.close()


async def test_the_jobs_api_is_off_without_a_data_folder(repository: Path, tmp_path: Path) -> None:
    settings = Settings().replace("server", models=repository, state_dir=tmp_path / "state").replace(
        "audit", enabled=False)
    client = await started_client(settings)
    try:
        response = await client.post("/v2/jobs", json={"model": "digits", "input": "a", "output": "b"})
        assert response.status == 404 and "jobs.data_dir" in (await response.json())["error"]
    finally:
        await client.close()


def _key(state: Path, name: str, scopes: str, models: str = "") -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["keys", "create", "--name", name, "--scopes", scopes, "--state-dir", str(state),
                     *(["--models", models] if models else [])]) == 0
    return out.getvalue().strip()


async def test_infer_scope_on_the_model_is_required_and_jobs_are_private(repository: Path, tmp_path: Path) -> None:
    settings = _settings(repository, tmp_path).replace("auth", enabled=True)
    write_input(digits_rows(repository, 10), tmp_path / "data", "npy")
    other = {"Authorization": f"Bearer {_key(tmp_path / 'state', 'other', 'infer', 'other')}"}
    reader = {"Authorization": f"Bearer {_key(tmp_path / 'state', 'reader', 'read')}"}
    owner = {"Authorization": f"Bearer {_key(tmp_path / 'state', 'owner', 'infer', 'digits')}"}
    client = await started_client(settings)
    try:
        body = {"model": "digits", "input": "in.npy", "output": "out"}
        assert (await client.post("/v2/jobs", json=body, headers=other)).status == 403
        assert (await client.post("/v2/jobs", json=body, headers=reader)).status == 403
        assert (await client.post("/v2/jobs", json=body)).status == 401
        created = await client.post("/v2/jobs", json=body, headers=owner)
        assert created.status == 201
        job_id = (await created.json())["id"]
        assert (await _wait(client, job_id, owner))["principal"] == "owner"
        assert (await client.get(f"/v2/jobs/{job_id}", headers=other)).status == 404  # not theirs
        assert (await (await client.get("/v2/jobs", headers=other)).json())["jobs"] == []
    finally:
        await client.close()


@pytest.mark.parametrize("resume", [True])
async def test_cancel_then_resume_over_the_api(repository: Path, tmp_path: Path, resume: bool) -> None:
    settings = _settings(repository, tmp_path, chunk_rows=512)
    x = digits_rows(repository, 40_000)
    write_input(x, tmp_path / "data", "parquet")
    client = await started_client(settings)
    try:
        body = {"model": "digits", "input": "in.parquet", "output": "out", "batch_size": 8}
        job_id = (await (await client.post("/v2/jobs", json=body)).json())["id"]
        for _ in range(600):
            if (await (await client.get(f"/v2/jobs/{job_id}")).json())["rows_done"] >= 1024:
                break
            await asyncio.sleep(0.02)
        cancelled = await (await client.delete(f"/v2/jobs/{job_id}")).json()
        assert cancelled["state"] == "cancelled" and cancelled["rows_done"] < len(x)
        again = await client.post("/v2/jobs", json={**body, "resume": resume})
        assert (await _wait(client, (await again.json())["id"]))["state"] == "done"
    finally:
        await client.close()
    ids, probabilities = read_output(tmp_path / "data" / "out")
    assert ids.tolist() == list(range(len(x)))
    assert np.array_equal(probabilities, reference(repository, tmp_path, x, batch_size=8))
