"""The Open Inference Protocol over REST against the real server (in-process, 127.0.0.1), real runtimes."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from aiohttp.test_utils import TestClient
from server_testlib import (
    client_for,
    eval_rows,
    publish_identity_model,
    publish_openvino_ir,
    set_version_policy,
)


async def _client(repository: Path, tmp_path: Path, **groups: dict) -> TestClient:
    return await client_for(repository, tmp_path, **groups)


@pytest.fixture
async def client(repository: Path, tmp_path: Path):
    client = await _client(repository, tmp_path)
    yield client
    await client.close()


def _reference(repository: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _json_request(x: np.ndarray, **extra: object) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
            **extra}


async def test_health_and_server_metadata(client: TestClient) -> None:
    assert (await client.get("/v2/health/live")).status == 200
    assert (await client.get("/v2/health/ready")).status == 200
    response = await client.get("/v2")
    meta = await response.json()
    assert meta["name"] == "model-appliance" and "binary_tensor_data" in meta["extensions"]
    assert response.headers["Server"] == "model-appliance"  # no library versions for scanners


async def test_model_metadata_shows_device_and_tensors(client: TestClient) -> None:
    meta = await (await client.get("/v2/models/digits")).json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["device"] == "CPU" and meta["parameters"]["runtime"] == "onnxruntime"
    assert (await client.get("/v2/models/digits/ready")).status == 200
    assert (await client.get("/v2/models/digits/versions/1/ready")).status == 200
    config = await (await client.get("/v2/models/digits/config")).json()
    assert config["max_batch_size"] == 64 and config["input"][0] == {"name": "input", "data_type": "TYPE_FP32",
                                                                     "dims": [64]}


async def test_json_inference_matches_the_runtime(client: TestClient, repository: Path) -> None:
    x, labels = eval_rows(repository)
    response = await client.post("/v2/models/digits/infer", json=_json_request(x, id="req-7"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["id"] == "req-7" and body["model_name"] == "digits" and body["model_version"] == "1"
    (output,) = body["outputs"]
    assert "parameters" not in output  # the Triton C++ client would read it as binary data
    got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, _reference(repository, x), rtol=1e-5, atol=1e-6)
    assert (got.argmax(1) == labels).mean() >= 0.75


async def test_nested_data_and_version_addressing(client: TestClient, repository: Path) -> None:
    x, _ = eval_rows(repository, 2)
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.tolist()}]}
    response = await client.post("/v2/models/digits/versions/1/infer", json=doc)
    assert response.status == 200
    assert (await client.post("/v2/models/digits/versions/9/infer", json=doc)).status == 404
    assert (await client.post("/v2/models/digits/versions/abc/infer", json=doc)).status == 404


async def test_binary_inputs_and_outputs(client: TestClient, repository: Path) -> None:
    x, _ = eval_rows(repository, 3)
    header = orjson.dumps({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64],
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    })
    response = await client.post("/v2/models/digits/infer", data=header + x.tobytes(),
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status == 200, await response.text()
    raw = await response.read()
    split = int(response.headers["Inference-Header-Content-Length"])
    doc = orjson.loads(raw[:split])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 3 * 10 * 4
    got = np.frombuffer(raw[split:], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(got, _reference(repository, x), rtol=1e-5, atol=1e-6)


async def test_binary_data_output_parameter_applies_to_all_outputs(client: TestClient, repository: Path) -> None:
    x, _ = eval_rows(repository, 1)
    response = await client.post("/v2/models/digits/infer",
                                 json=_json_request(x, parameters={"binary_data_output": True}))
    assert response.status == 200 and "Inference-Header-Content-Length" in response.headers


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]}, "no input 'nope'"),
    ({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 64], "data": [0] * 64}]}, "datatype"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 63}]}, "needs 64"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0] * 63}]}, "dims"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ["x"] * 64}]}, "datatype"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [65, 64], "data": [0] * 64 * 65}]}, "max_batch"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [100000, 100000], "data": []}]}, "limit"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, -64], "data": []}]}, "negative"),
    ({"inputs": [{"name": "input", "datatype": "WHAT", "shape": [1, 64], "data": []}]}, "datatype"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}],
      "outputs": [{"name": "zzz"}]}, "unknown output"),
    ([], "object"),
])
async def test_invalid_requests_get_400(client: TestClient, doc: object, fragment: str) -> None:
    response = await client.post("/v2/models/digits/infer", data=orjson.dumps(doc),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    body = await response.json()
    assert set(body) == {"error"} and fragment in body["error"]


async def test_malformed_json_and_binary_sizes(client: TestClient) -> None:
    assert (await client.post("/v2/models/digits/infer", data=b"{not json")).status == 400
    header = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                       "parameters": {"binary_data_size": 256}}]})
    short = await client.post("/v2/models/digits/infer", data=header + b"\0" * 100,
                              headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status == 400
    extra = await client.post("/v2/models/digits/infer", data=header + b"\0" * 300,
                              headers={"Inference-Header-Content-Length": str(len(header))})
    assert extra.status == 400
    bad_length = await client.post("/v2/models/digits/infer", data=header,
                                   headers={"Inference-Header-Content-Length": "999999"})
    assert bad_length.status == 400


async def test_unknown_model_and_route(client: TestClient) -> None:
    response = await client.post("/v2/models/unknown/infer", json={"inputs": []})
    assert response.status == 404 and "unknown" in (await response.json())["error"]
    response = await client.get("/v2/nothing/here")
    assert response.status == 404 and "error" in await response.json()
    assert (await client.get("/v2/models/unknown")).status == 404


async def test_gzip_request_and_response(client: TestClient, repository: Path) -> None:
    x, _ = eval_rows(repository, 64)
    body = gzip.compress(orjson.dumps(_json_request(x)))
    response = await client.post("/v2/models/digits/infer", data=body,
                                 headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip",
                                          "Content-Type": "application/json"})
    assert response.status == 200
    assert response.headers.get("Content-Encoding") == "gzip"  # aiohttp inflates it for us
    assert len((await response.json())["outputs"][0]["data"]) == 640


async def test_body_over_limit_is_413(repository: Path, tmp_path: Path) -> None:
    client = await _client(repository, tmp_path, http={"max_body_bytes": 4096})
    try:
        x = np.zeros((64, 64), dtype=np.float32)
        response = await client.post("/v2/models/digits/infer", json=_json_request(x))
        assert response.status == 413 and "error" in await response.json()
    finally:
        await client.close()


async def test_tampered_version_is_refused_and_others_keep_serving(repository: Path, tmp_path: Path) -> None:
    publish_openvino_ir(repository)  # version 2
    set_version_policy(repository, "digits", "all = true")
    with (repository / "digits" / "2" / "model.bin").open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    client = await _client(repository, tmp_path)
    try:
        meta = await (await client.get("/v2/models/digits/versions/2")).json()
        assert meta["parameters"]["state"] == "UNAVAILABLE" and "sha256" in meta["parameters"]["reason"]
        assert (await client.get("/v2/models/digits/versions/2/ready")).status == 503
        x, _ = eval_rows(repository, 1)
        assert (await client.post("/v2/models/digits/versions/2/infer", json=_json_request(x))).status == 503
        assert (await client.post("/v2/models/digits/infer", json=_json_request(x))).status == 200
        index = await (await client.post("/v2/repository/index")).json()
        assert {(r["version"], r["state"]) for r in index} == {("1", "READY"), ("2", "UNAVAILABLE")}
    finally:
        await client.close()


async def test_openvino_ir_serves_the_same_predictions(repository: Path, tmp_path: Path) -> None:
    publish_openvino_ir(repository)
    client = await _client(repository, tmp_path)
    try:
        meta = await (await client.get("/v2/models/digits")).json()
        assert meta["versions"] == ["2"] and meta["parameters"]["runtime"] == "openvino"
        assert meta["parameters"]["device"] == "CPU"
        x, _ = eval_rows(repository, 16)
        response = await client.post("/v2/models/digits/infer", json=_json_request(x))
        body = await response.json()
        got = np.asarray(body["outputs"][0]["data"], dtype=np.float32).reshape(16, 10)
        np.testing.assert_allclose(got, _reference(repository, x), rtol=1e-4, atol=1e-5)
    finally:
        await client.close()


async def test_every_datatype_round_trips(repository: Path, tmp_path: Path) -> None:
    publish_identity_model(repository)
    client = await _client(repository, tmp_path)
    try:
        values = {
            "BOOL": [True, False, True], "UINT8": [0, 7, 255], "UINT16": [0, 1, 65535], "UINT32": [0, 1, 2**32 - 1],
            "UINT64": [0, 1, 2**63], "INT8": [-128, 0, 127], "INT16": [-5, 0, 5], "INT32": [-(2**31), 0, 7],
            "INT64": [-(2**63), 0, 2**62], "FP16": [0.5, -1.0, 2.0], "FP32": [0.25, -3.5, 1e10],
            "FP64": [1e-300, 2.5, -7.0], "BYTES": ["héllo", "", "x y"],
        }
        inputs = [{"name": f"in_{k.lower()}", "datatype": k, "shape": [3], "data": v} for k, v in values.items()]
        response = await client.post("/v2/models/identity/infer", json={"inputs": inputs})
        assert response.status == 200, await response.text()
        outputs = {o["name"]: o for o in (await response.json())["outputs"]}
        for datatype, data in values.items():
            out = outputs[f"out_{datatype.lower()}"]
            assert out["datatype"] == datatype and out["shape"] == [3]
            assert out["data"] == data, datatype
        # the same through the binary extension, BYTES included
        header_inputs, blobs = [], []
        for datatype, data in values.items():
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in data)
            else:
                from appliance.dataplane.tensors import TO_NUMPY

                raw = np.asarray(data, dtype=TO_NUMPY[datatype]).tobytes()
            header_inputs.append({"name": f"in_{datatype.lower()}", "datatype": datatype, "shape": [3],
                                  "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        header = orjson.dumps({"inputs": header_inputs, "parameters": {"binary_data_output": True}})
        response = await client.post("/v2/models/identity/infer", data=header + b"".join(blobs),
                                     headers={"Inference-Header-Content-Length": str(len(header))})
        assert response.status == 200, await response.text()
        raw = await response.read()
        split = int(response.headers["Inference-Header-Content-Length"])
        doc = orjson.loads(raw[:split])
        offset = split
        for out in doc["outputs"]:
            size = out["parameters"]["binary_data_size"]
            blob = raw[offset:offset + size]
            offset += size
            datatype = out["datatype"]
            if datatype == "BYTES":
                assert blob == blobs[list(values).index("BYTES")]
            else:
                assert blob == blobs[list(values).index(datatype)], datatype
    finally:
        await client.close()


async def test_openapi_document_matches_the_route_table(client: TestClient) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if route.method in ("HEAD", "OPTIONS") or path is None:
            continue
        served.add((path, route.method))
    assert served == documented
