"""The optimizer's published INT8 versions load in the server and predict within the accuracy gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from server_testlib import set_version_policy, settings_for, started_client

from modelrepo import read_manifest


async def test_int8_versions_serve_within_the_gate(optimized_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(optimized_repository, repository)
    set_version_policy(repository, "digits", "all = true")
    client = await started_client(settings_for(repository, tmp_path / "state"))
    try:
        meta = await (await client.get("/v2/models/digits")).json()
        assert meta["versions"] == ["1", "2", "3"]
        data = np.load(repository / "digits" / "data" / "eval.npz")
        x, labels = data["input"].astype(np.float32), data["labels"]
        accuracy = {}
        for version in ("1", "2", "3"):
            info = await (await client.get(f"/v2/models/digits/versions/{version}")).json()
            manifest = read_manifest(repository / "digits" / version)
            assert info["parameters"]["precision"] == manifest.precision
            correct = 0
            for start in range(0, len(x), 64):
                rows = x[start:start + 64]
                response = await client.post(f"/v2/models/digits/versions/{version}/infer", json={"inputs": [
                    {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]})
                assert response.status == 200, await response.text()
                out = (await response.json())["outputs"][0]
                probabilities = np.asarray(out["data"]).reshape(out["shape"])
                correct += int((probabilities.argmax(1) == labels[start:start + 64]).sum())
            accuracy[version] = correct / len(x)
        precisions = {v: read_manifest(repository / "digits" / v).precision for v in ("2", "3")}
        assert precisions == {"2": "int8", "3": "int8"}
        formats = {v: read_manifest(repository / "digits" / v).format for v in ("2", "3")}
        assert formats == {"2": "openvino", "3": "onnx"}
        for version in ("2", "3"):
            assert accuracy["1"] - accuracy[version] <= 0.01, accuracy  # the default gate: 1 point
            recorded = read_manifest(repository / "digits" / version).metrics["accuracy"]
            assert recorded  # the optimizer's own measurement travels with the version
    finally:
        await client.close()
