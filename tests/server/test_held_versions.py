"""A version whose manifest says ``"serve": false`` is skipped by the version policy, yet callable
by its explicit version; manifests without the field keep serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from server_testlib import client_for, eval_rows, publish_openvino_ir, set_version_policy

from modelrepo import read_manifest


def _hold(version_dir: Path) -> None:
    manifest = read_manifest(version_dir)
    manifest.serve = False
    manifest.write(version_dir)


async def _infer(client, path: str, x: np.ndarray) -> dict:  # client: aiohttp TestClient
    response = await client.post(path, json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_held_version_is_skipped_by_default_and_served_when_named(repository: Path, tmp_path: Path) -> None:
    held = publish_openvino_ir(repository)  # version 2, newest: the policy (latest = 1) would pick it
    _hold(held)
    x, _ = eval_rows(repository)
    client = await client_for(repository, tmp_path)
    try:
        default = await _infer(client, "/v2/models/digits/infer", x)
        assert default["model_version"] == "1"
        named = await _infer(client, "/v2/models/digits/versions/2/infer", x)
        assert named["model_version"] == "2"
        meta = await (await client.get("/v2/models/digits")).json()
        assert meta["versions"] == ["1", "2"]
        assert (await client.get("/v2/models/digits/versions/2/ready")).status == 200
    finally:
        await client.close()


async def test_servable_newer_version_still_wins_and_old_manifests_serve(repository: Path, tmp_path: Path) -> None:
    _hold(publish_openvino_ir(repository))   # version 2: held
    publish_openvino_ir(repository)          # version 3: written without touching "serve"
    assert read_manifest(repository / "digits" / "3").serve is True
    set_version_policy(repository, "digits", "latest = 1")
    x, _ = eval_rows(repository)
    client = await client_for(repository, tmp_path)
    try:
        assert (await _infer(client, "/v2/models/digits/infer", x))["model_version"] == "3"
        # Version 2 is older than the served one: the policy leaves it unloaded, like any old version.
        assert (await client.get("/v2/models/digits/versions/2")).status == 404
    finally:
        await client.close()


async def test_optimizer_held_int8_leaves_the_faster_fp32_served(repository: Path, tmp_path: Path) -> None:
    """End to end: INT8 that is not faster (forced with an unreachable margin) is published held,
    and the server keeps answering from the FP32 source unless a request names the INT8 version."""
    from optimizer import OptimizeRequest, optimize

    data = repository / "digits" / "data"
    result = optimize(OptimizeRequest(source=repository / "digits" / "1", calibration=data / "calibration.npz",
                                      evaluation=data / "eval.npz", min_speedup=100.0, bench_seconds=0.05,
                                      quiet=True))
    assert result.versions == [2, 3] and result.served == [False, False]
    x, _ = eval_rows(repository)
    client = await client_for(repository, tmp_path)
    try:
        assert (await _infer(client, "/v2/models/digits/infer", x))["model_version"] == "1"
        assert (await _infer(client, "/v2/models/digits/versions/3/infer", x))["model_version"] == "3"
    finally:
        await client.close()
