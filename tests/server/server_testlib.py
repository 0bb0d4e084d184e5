"""Helpers for the server tests: settings for a repository, models built in tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Settings
from modelrepo import Manifest, publish_version, staging_directory

ALL_DATATYPES = {
    "BOOL": "tensor(bool)", "UINT8": "tensor(uint8)", "UINT16": "tensor(uint16)", "UINT32": "tensor(uint32)",
    "UINT64": "tensor(uint64)", "INT8": "tensor(int8)", "INT16": "tensor(int16)", "INT32": "tensor(int32)",
    "INT64": "tensor(int64)", "FP16": "tensor(float16)", "FP32": "tensor(float)", "FP64": "tensor(double)",
    "BYTES": "tensor(string)",
}


def settings_for(models: Path, state: Path, **groups: dict) -> Settings:
    settings = Settings().replace("server", models=models, state_dir=state).replace("audit", enabled=False)
    for group, changes in groups.items():
        settings = settings.replace(group, **changes)
    return settings


def eval_rows(repository: Path, count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(repository / "digits" / "data" / "eval.npz")
    return data["input"][:count].astype(np.float32), data["labels"][:count]


def publish_identity_model(repository: Path, name: str = "identity") -> Path:
    """An ONNX model echoing one input per protocol datatype (no batch dimension)."""
    from onnx import TensorProto, helper

    types = {
        "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
    nodes, inputs, outputs = [], [], []
    for datatype, proto in types.items():
        lower = datatype.lower()
        nodes.append(helper.make_node("Identity", [f"in_{lower}"], [f"out_{lower}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{lower}", proto, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"out_{lower}", proto, ["n"]))
    model = helper.make_model(helper.make_graph(nodes, "identity", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model_dir = repository / name
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes(model.SerializeToString())
        Manifest.for_directory(staging, format="onnx", precision="mixed", model_file="model.onnx").write(staging)
        return publish_version(model_dir, staging)


def publish_openvino_ir(repository: Path, model: str = "digits") -> Path:
    """Convert version 1 (ONNX) to an FP32 OpenVINO IR published as the next version."""
    import openvino as ov

    source = repository / model / "1" / "model.onnx"
    model_dir = repository / model
    with staging_directory(model_dir) as staging:
        ov.save_model(ov.Core().read_model(str(source)), str(staging / "model.xml"), compress_to_fp16=False)
        Manifest.for_directory(staging, format="openvino", precision="fp32", model_file="model.xml",
                               parent_version=1).write(staging)
        return publish_version(model_dir, staging)


def set_version_policy(repository: Path, model: str, policy: str) -> None:
    path = repository / model / "model.toml"
    text = path.read_text()
    start = text.index("[version_policy]")
    end = text.index("\n\n", start)
    path.write_text(text[:start] + f"[version_policy]\n{policy}" + text[end:])


def copy_model(repository: Path, source: str, target: str, runtime: str | None = None) -> None:
    shutil.copytree(repository / source, repository / target)
    if runtime:
        path = repository / target / "model.toml"
        path.write_text(path.read_text().replace('runtime = "auto"', f'runtime = "{runtime}"'))


def publish_heavy_model(repository: Path, name: str = "heavy", width: int = 1024, layers: int = 8,
                        max_batch_size: int = 64) -> Path:
    """A compute-heavy MLP (one shared width×width weight applied ``layers`` times) so that a
    request is slow enough to be caught in flight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, previous = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{i}"]))
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"a{i}"]))
        previous = f"a{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.toml").write_text(f"max_batch_size = {max_batch_size}\n")
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes(model.SerializeToString())
        Manifest.for_directory(staging, format="onnx", precision="fp32", model_file="model.onnx").write(staging)
        return publish_version(model_dir, staging)


async def started_client(settings: Settings, ready_within_s: float = 180.0):  # -> aiohttp TestClient
    """A real in-process server on 127.0.0.1 and a client, once every model has loaded."""
    import asyncio
    import time

    from aiohttp.test_utils import TestClient, TestServer

    from appliance.app import create_app

    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    deadline = time.monotonic() + ready_within_s
    while (await client.get("/v2/health/ready")).status != 200:
        if time.monotonic() > deadline:
            await client.close()
            raise TimeoutError(f"server not ready after {ready_within_s}s")
        await asyncio.sleep(0.05)
    return client


async def client_for(repository: Path, tmp_path: Path, **groups: dict):  # -> aiohttp TestClient
    """``started_client`` on ``repository`` with state under ``tmp_path`` and some settings changed."""
    return await started_client(settings_for(repository, tmp_path / "state", **groups))


def appliance_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m appliance ARGS`` (e.g. ``audit export``), its output captured."""
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120)


def post_with_id(url: str, doc: dict[str, Any], request_id: str, timeout: float = 30) -> int:
    """POST ``doc`` with ``X-Request-ID`` (the audit record carries it), past the cache; the status,
    or -1 when the connection was refused or reset (never answered)."""
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Request-ID": request_id,
                                              "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1


class AnsweredLoad:
    """Closed-loop clients in threads that remember the request id of every request answered 200."""

    def __init__(self, url: str, doc: dict[str, Any], clients: int) -> None:
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(url, doc, i)) for i in range(clients)]

    def _client(self, url: str, doc: dict[str, Any], client: int) -> None:
        n = 0
        while not self._stop.is_set():
            request_id = f"c{client}-{n}"
            if post_with_id(url, doc, request_id, timeout=10) == 200:
                self.answered.append(request_id)
            n += 1

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.answered


def assert_every_answer_audited(state: Path, answered: list[str]) -> None:
    """Each answered request id has its audit record, and ``audit verify`` passes."""
    export = appliance_cli("audit", "export", "--state-dir", str(state), "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    recorded = {json.loads(line).get("request_id") for line in export.stdout.splitlines() if line.strip()}
    missing = [r for r in answered if r not in recorded]
    assert not missing, f"{len(missing)} answered requests have no audit record: {missing[:5]}"
    verify = appliance_cli("audit", "verify", "--state-dir", str(state))
    assert verify.returncode == 0, verify.stdout + verify.stderr
