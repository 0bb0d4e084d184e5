"""Serving engine with real runtimes: dynamic batching, admission (429), deadlines (504), cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from aiohttp.test_utils import TestClient
from server_testlib import (
    client_for,
    eval_rows,
    publish_heavy_model,
    publish_openvino_ir,
    set_version_policy,
    settings_for,
    started_client,
)

from appliance.appkeys import METRICS


async def _client(repository: Path, tmp_path: Path, **groups: dict) -> TestClient:
    return await client_for(repository, tmp_path, **groups)


def _doc(x: np.ndarray, **extra: object) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
            **extra}


def _sample(client: TestClient, name: str, labels: dict[str, str]) -> float:
    return client.app[METRICS].registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
async def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(repository: Path, tmp_path: Path,
                                                                          runtime: str) -> None:
    if runtime == "openvino":
        publish_openvino_ir(repository)
    client = await _client(repository, tmp_path, runtime={"nireq": 1}, limits={"adaptive": False})
    try:
        x, _ = eval_rows(repository, 96)
        session = ort.InferenceSession(str(repository / "digits" / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"input": x})[0]
        # rows of different sizes: 1 to 3 rows per request
        slices = [(i, i + 1 + i % 3) for i in range(0, 96, 3)]
        responses = await asyncio.gather(*[
            client.post("/v2/models/digits/infer", json=_doc(x[a:b]), headers={"Cache-Control": "no-cache"})
            for a, b in slices])
        batch_sizes = []
        for (a, b), response in zip(slices, responses, strict=True):
            assert response.status == 200, await response.text()
            out = (await response.json())["outputs"][0]
            got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            np.testing.assert_allclose(got, expected[a:b], rtol=1e-4, atol=1e-5)
            batch_sizes.append(int(response.headers["X-Batch-Size"]))
        assert max(batch_sizes) > 3, batch_sizes  # several requests shared a runtime call
        version = (await (await client.get("/v2/models/digits")).json())["versions"][-1]
        batches = _sample(client, "appliance_batch_size_count", {"model": "digits", "version": version})
        assert 0 < batches < len(slices)
    finally:
        await client.close()


@pytest.mark.parametrize("limits", [{}, {"adaptive": False, "max_concurrency": 2, "max_queue": 2}],
                         ids=["default-adaptive", "fixed"])
async def test_flood_gets_only_200_or_429_and_the_server_stays_healthy(repository: Path, tmp_path: Path,
                                                                       limits: dict) -> None:
    publish_heavy_model(repository)
    client = await _client(repository, tmp_path, limits=limits)
    try:
        x = np.random.default_rng(1).standard_normal((8, 1024)).astype(np.float32)
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [8, 1024], "data": x.ravel().tolist()}]}
        responses = await asyncio.wait_for(asyncio.gather(*[
            client.post("/v2/models/heavy/infer", json=doc) for _ in range(60)]), 120)
        statuses = [r.status for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(429) > 0 and statuses.count(200) >= 4
        for response in responses:
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert "capacity" in (await response.json())["error"]
        assert (await client.get("/v2/health/ready")).status == 200
        assert (await client.post("/v2/models/heavy/infer", json=doc)).status == 200
        assert _sample(client, "appliance_rejections_total", {"model": "heavy", "reason": "overloaded"}) > 0
    finally:
        await client.close()


async def test_expired_deadline_is_504_without_inference(repository: Path, tmp_path: Path) -> None:
    client = await _client(repository, tmp_path)
    try:
        x, _ = eval_rows(repository, 1)
        before = _sample(client, "appliance_batch_size_count", {"model": "digits", "version": "1"})
        response = await client.post("/v2/models/digits/infer", json=_doc(x, parameters={"timeout": 1}),
                                     headers={"Cache-Control": "no-cache"})
        assert response.status == 504 and "deadline" in (await response.json())["error"]
        after = _sample(client, "appliance_batch_size_count", {"model": "digits", "version": "1"})
        assert after == before  # dropped before reaching the runtime
        header = await client.post("/v2/models/digits/infer", json=_doc(x),
                                   headers={"X-Request-Timeout-Ms": "0.001", "Cache-Control": "no-cache"})
        assert header.status == 504
        ok = await client.post("/v2/models/digits/infer", json=_doc(x, parameters={"timeout": 5_000_000}))
        assert ok.status == 200
    finally:
        await client.close()


async def test_cache_hits_are_identical_and_keyed_on_tensors_not_json(repository: Path, tmp_path: Path) -> None:
    publish_openvino_ir(repository)  # version 2 beside version 1
    set_version_policy(repository, "digits", "all = true")
    client = await _client(repository, tmp_path)
    try:
        x, _ = eval_rows(repository, 2)
        first = await client.post("/v2/models/digits/versions/1/infer", json=_doc(x, id="a"))
        second = await client.post("/v2/models/digits/versions/1/infer", json=_doc(x, id="b"))
        assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
        one, two = await first.json(), await second.json()
        assert one["outputs"] == two["outputs"] and two["id"] == "b"
        bypass = await client.post("/v2/models/digits/versions/1/infer", json=_doc(x),
                                   headers={"Cache-Control": "no-cache"})
        assert bypass.headers["X-Cache"] == "MISS"
        other_version = await client.post("/v2/models/digits/versions/2/infer", json=_doc(x))
        assert other_version.headers["X-Cache"] == "MISS"
        changed = x.copy()
        changed[0, 0] += 1
        assert (await client.post("/v2/models/digits/versions/1/infer",
                                  json=_doc(changed))).headers["X-Cache"] == "MISS"
        bad = await client.post("/v2/models/digits/versions/1/infer",
                                json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                                  "data": [0] * 63}]})
        assert bad.status == 400
        assert _sample(client, "appliance_cache_lookups_total", {"model": "digits", "result": "hit"}) == 1
    finally:
        await client.close()


async def test_flood_refusals_come_before_the_body_and_are_tallied_in_the_audit_log(
        repository: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from appliance.audit.keys import init_keys
    from appliance.config import Settings

    publish_heavy_model(repository)
    state = tmp_path / "state"
    init_keys(Settings().replace("server", state_dir=state))
    settings = settings_for(repository, state, limits={"max_concurrency": 1, "max_queue": 1}).replace(
        "audit", enabled=True, mode="strict")
    client = await started_client(settings)
    try:
        x = np.random.default_rng(3).standard_normal((16, 1024)).astype(np.float32)
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [16, 1024], "data": x.ravel().tolist()}]}
        responses = await asyncio.gather(*[client.post("/v2/models/heavy/infer", json=doc) for _ in range(40)])
        statuses = [r.status for r in responses]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0
    finally:
        await client.close()
    export = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "appliance", "audit", "export", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    tallied = sum(r["summary"]["refused"] for r in rows if r["action"] == "reject" and r["status"] == 429)
    assert tallied == statuses.count(429)  # every refusal is accounted for, in a handful of records
    assert sum(1 for r in rows if r["action"] == "reject") <= 3
    assert sum(1 for r in rows if r["action"] == "infer" and r["status"] == 200) == statuses.count(200)
