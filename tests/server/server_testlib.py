"""Helpers for the server tests: settings for a repository, models built in tests."""

from __future__ import annotations

import shutil
from pathlib import Path

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
