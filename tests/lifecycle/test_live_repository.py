"""Live model updates: Triton's repository extension with tritonclient unchanged, zero-downtime
swaps under load, a failed version that leaves the serving one in place, the cache dropping an
unloaded version's answers, and repository polling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import ServerProcess
from lifecycle_testlib import publish_broken, publish_copy, publish_perturbed
from server_testlib import client_for, eval_rows
from tritonclient.utils import InferenceServerException


def _doc(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


def _infer(client: httpclient.InferenceServerClient, x: np.ndarray) -> tuple[np.ndarray, str]:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer("digits", [tensor])
    return result.as_numpy("probabilities"), result.get_response()["model_version"]


def test_tritonclient_loads_a_new_version_and_unloads_the_model(server: ServerProcess, repository: Path) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    x, _ = eval_rows(repository, 4)
    before, version = _infer(client, x)
    assert version == "1"
    publish_perturbed(repository / "digits")  # version 2: answers differently
    assert _infer(client, x)[1] == "1"  # nothing changes until someone loads
    client.load_model("digits")
    after, version = _infer(client, x)
    assert version == "2" and not np.allclose(before, after)
    index = {(row["name"], row["version"]): row["state"] for row in client.get_model_repository_index()}
    assert index == {("digits", "2"): "READY"}  # the default policy (latest 1) retired version 1
    client.unload_model("digits")
    assert not client.is_model_ready("digits") and not client.is_server_ready()
    with pytest.raises(InferenceServerException):
        _infer(client, x)
    client.load_model("digits")
    assert _infer(client, x)[1] == "2" and client.is_server_ready()
    client.close()


async def test_a_version_that_fails_to_load_leaves_the_serving_one_in_place(repository: Path,
                                                                          tmp_path: Path) -> None:
    client = await client_for(repository, tmp_path)
    try:
        publish_broken(repository / "digits")
        response = await client.post("/v2/repository/models/digits/load")
        assert response.status == 503 and "integrity" in (await response.json())["error"]
        index = await (await client.post("/v2/repository/index")).json()
        states = {row["version"]: (row["state"], row["reason"]) for row in index}
        assert states["1"] == ("READY", "") and states["2"][0] == "UNAVAILABLE" and "integrity" in states["2"][1]
        x, _ = eval_rows(repository, 1)
        answer = await client.post("/v2/models/digits/infer", json=_doc(x))
        assert answer.status == 200 and (await answer.json())["model_version"] == "1"
        assert (await client.get("/v2/health/ready")).status == 200
    finally:
        await client.close()


async def test_twenty_swaps_under_load_lose_no_request(repository: Path, tmp_path: Path) -> None:
    # Admission lets every client in: this checks the swap, not overload behaviour.
    client = await client_for(repository, tmp_path, limits={"adaptive": False, "max_concurrency": 64})
    x, _ = eval_rows(repository, 32)
    statuses: dict[int, int] = {}
    versions: set[str] = set()
    stop = False

    async def user(index: int) -> None:
        i = index
        while not stop:
            response = await client.post("/v2/models/digits/infer", json=_doc(x[i % 32:i % 32 + 1]),
                                         headers={"Cache-Control": "no-cache"})
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                versions.add((await response.json())["model_version"])
            i += 16

    users = [asyncio.create_task(user(i)) for i in range(16)]
    try:
        for _ in range(20):
            publish_copy(repository / "digits")
            response = await client.post("/v2/repository/models/digits/load")
            assert response.status == 200, await response.text()
            await asyncio.sleep(0.05)
    finally:
        stop = True
        await asyncio.gather(*users)
        await client.close()
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 100 and len(versions) >= 10  # requests met many of the 21 versions


async def test_unloading_drops_the_versions_cached_answers(repository: Path, tmp_path: Path) -> None:
    client = await client_for(repository, tmp_path)
    try:
        x, _ = eval_rows(repository, 1)
        for _ in range(2):
            await client.post("/v2/models/digits/infer", json=_doc(x))
        status = await (await client.get("/v2/status")).json()
        assert status["cache"]["entries"] == 1
        assert (await client.post("/v2/repository/models/digits/unload")).status == 200
        status = await (await client.get("/v2/status")).json()
        assert status["cache"]["entries"] == 0
    finally:
        await client.close()


async def test_polling_loads_a_newly_published_version(repository: Path, tmp_path: Path) -> None:
    client = await client_for(repository, tmp_path, server={"models_poll_interval_s": 0.2})
    try:
        publish_copy(repository / "digits")
        x, _ = eval_rows(repository, 1)
        deadline = time.monotonic() + 20
        version = "1"
        while version != "2" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            version = (await (await client.post("/v2/models/digits/infer", json=_doc(x))).json())["model_version"]
        assert version == "2"
    finally:
        await client.close()
