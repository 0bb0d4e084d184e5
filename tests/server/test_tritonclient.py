"""The official Triton HTTP client works against the appliance unchanged (real subprocess server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from conftest import ServerProcess
from server_testlib import eval_rows


def test_tritonclient_live_ready_metadata_and_infer(server: ServerProcess, repository: Path) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert client.get_server_metadata()["name"] == "model-appliance"
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["name"] == "input" and meta["outputs"][0]["name"] == "probabilities"
    assert client.get_model_config("digits")["max_batch_size"] == 64
    x, labels = eval_rows(repository, 16)
    results = {}
    for binary in (False, True):
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        result = client.infer("digits", [tensor], outputs=[wanted], request_id=f"triton-{binary}")
        assert result.get_response()["id"] == f"triton-{binary}"
        results[binary] = result.as_numpy("probabilities")
        assert results[binary].shape == (16, 10)
    np.testing.assert_array_equal(results[False], results[True])
    assert (results[True].argmax(1) == labels).mean() >= 0.8
    index = client.get_model_repository_index()
    assert {"name": "digits", "version": "1", "state": "READY", "reason": ""} in index
    client.close()
