"""Triton's own gRPC client, unchanged, against a real ``appliance serve`` subprocess: health,
metadata, config, raw-tensor inference, streaming, statistics, repository load/unload."""

from __future__ import annotations

import json
import queue
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ServerProcess
from grpc_testlib import grpc_server
from server_testlib import eval_rows

grpcclient = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def served(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with grpc_server(digits_repository, tmp_path_factory.mktemp("grpc")) as server:
        yield server


@pytest.fixture
def client(served: ServerProcess) -> Iterator[object]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    yield client
    client.close()


def _reference(repository: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _input(x: np.ndarray) -> object:
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_health_metadata_and_config(client: object) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_server_metadata()
    assert meta.name == "model-appliance" and "model_repository" in meta.extensions
    model = client.get_model_metadata("digits", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["64"]}]


def test_raw_tensor_inference_matches_the_runtime(client: object, digits_repository: Path) -> None:
    x, labels = eval_rows(digits_repository, 16)
    wanted = grpcclient.InferRequestedOutput("probabilities")
    result = client.infer("digits", [_input(x)], outputs=[wanted], request_id="grpc-1")
    assert result.get_response().id == "grpc-1" and result.get_response().model_version == "1"
    got = result.as_numpy("probabilities")
    np.testing.assert_allclose(got, _reference(digits_repository, x), rtol=1e-5, atol=1e-6)
    assert (got.argmax(1) == labels).mean() >= 0.8
    stats = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 1


def test_streaming_inference_answers_every_request(client: object, digits_repository: Path) -> None:
    x, _ = eval_rows(digits_repository, 8)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for row in range(8):
            client.async_stream_infer("digits", [_input(x[row:row + 1])], request_id=f"s{row}")
        client.async_stream_infer("nope", [_input(x[:1])], request_id="bad")
        got = [answers.get(timeout=30) for _ in range(9)]
    finally:
        client.stop_stream()
    errors = [error for result, error in got if error is not None]
    assert len(errors) == 1 and "unknown model 'nope'" in str(errors[0])
    results = {result.get_response().id: result.as_numpy("probabilities") for result, error in got if error is None}
    reference = _reference(digits_repository, x)
    assert sorted(results) == [f"s{row}" for row in range(8)]
    for row in range(8):
        np.testing.assert_allclose(results[f"s{row}"][0], reference[row], rtol=1e-5, atol=1e-6)


def test_repository_index_unload_and_load(client: object) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "digits", "version": "1", "state": "READY"} in index
    client.unload_model("digits")
    assert not client.is_model_ready("digits")
    client.load_model("digits")
    assert client.is_model_ready("digits") and client.is_server_ready()


def test_status_page_shows_the_grpc_port(served: ServerProcess) -> None:
    with urllib.request.urlopen(f"{served.url}/v2/status", timeout=10) as response:
        server = json.load(response)["server"]
    assert server["grpc_port"] == served.grpc_port and server["host"] == "127.0.0.1"


def test_metrics_are_labelled_grpc(client: object, served: ServerProcess, digits_repository: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    x, _ = eval_rows(digits_repository, 1)
    client.infer("digits", [_input(x)])
    with pytest.raises(grpcclient.InferenceServerException):
        client.infer("made-up-name", [_input(x)])
    with urllib.request.urlopen(f"{served.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "appliance_requests_total"]
    grpc_ok = [s for s in samples if s.labels["protocol"] == "grpc" and s.labels["status"] == "200"]
    assert grpc_ok and all(s.labels["model"] == "digits" for s in grpc_ok) and sum(s.value for s in grpc_ok) >= 1
    assert not [s for s in samples if s.labels["model"] == "made-up-name"]  # no label from a client's whim
    assert any(s.labels["protocol"] == "grpc" and s.labels["status"] == "404" for s in samples)
