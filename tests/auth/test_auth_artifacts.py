"""Model artifacts encrypted at rest: same outputs as the plain model; wrong key or tampering
refuses that version only. Real runtimes (ONNX Runtime, OpenVINO), real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from pathlib import Path

import aiohttp
import numpy as np
from auth_testlib import DIGITS_ROW, running, settings_for

from appliance.cli import main
from modelrepo import Manifest, publish_version, sha256_file, staging_directory


def _encrypt(repository: Path, target: str, key_file: Path) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["models", "encrypt", target, "--models", str(repository), "--key-file", str(key_file)])


def _copy(repository: Path, source: str, target: str) -> None:
    shutil.copytree(repository / source, repository / target)


def _add_openvino_ir(repository: Path, name: str) -> None:
    """``name`` holding one FP32 OpenVINO IR version converted from digits' ONNX."""
    import openvino as ov

    (repository / name).mkdir()
    shutil.copy(repository / "digits" / "model.toml", repository / name / "model.toml")
    with staging_directory(repository / name) as staging:
        model = ov.Core().read_model(str(repository / "digits" / "1" / "model.onnx"))
        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        Manifest.for_directory(staging, format="openvino", precision="fp32", model_file="model.xml").write(staging)
        publish_version(repository / name, staging)


async def _outputs(session: aiohttp.ClientSession, url: str, model: str, rows: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    async with session.post(f"{url}/v2/models/{model}/infer", json=body) as response:
        assert response.status == 200, await response.text()
        out = (await response.json())["outputs"][0]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


async def _states(session: aiohttp.ClientSession, url: str, count: int) -> dict[str, tuple[str, str]]:
    """Model → (state, reason), once ``count`` models are known and none is loading any more."""
    for _ in range(600):
        async with session.post(f"{url}/v2/repository/index") as response:
            rows = await response.json()
        if len(rows) == count and all(row["state"] != "LOADING" for row in rows):
            return {row["name"]: (row["state"], row["reason"]) for row in rows}
        await asyncio.sleep(0.05)
    raise TimeoutError("models still loading")


async def test_encrypted_models_serve_the_same_outputs(repository: Path, tmp_path: Path) -> None:
    _copy(repository, "digits", "sealed")
    _add_openvino_ir(repository, "sealed_ir")
    key_file = tmp_path / "keys" / "model.key"
    assert _encrypt(repository, "sealed/1", key_file) == 0  # creates the key
    assert _encrypt(repository, "sealed_ir/1", key_file) == 0
    assert _encrypt(repository, "sealed/1", key_file) == 1  # already sealed
    assert sorted(p.name for p in (repository / "sealed_ir" / "1").iterdir()) == [
        "manifest.json", "model.bin.enc", "model.xml.enc"]
    plain_onnx = (repository / "digits" / "1" / "model.onnx").read_bytes()
    assert plain_onnx[:4096] not in (repository / "sealed" / "1" / "model.onnx.enc").read_bytes()
    manifest = json.loads((repository / "sealed" / "1" / "manifest.json").read_text())
    assert manifest["encryption"]["alg"] == "AES-256-GCM" and manifest["model_file"] == "model.onnx.enc"
    assert manifest["files"]["model.onnx.enc"] == sha256_file(repository / "sealed" / "1" / "model.onnx.enc")
    rows = np.load(repository / "digits" / "data" / "eval.npz")["input"][:16].astype(np.float32)
    state = tmp_path / "state"
    async with running(settings_for(repository, state, auth={"model_key_file": key_file})) as url, \
            aiohttp.ClientSession() as session:
        plain = await _outputs(session, url, "digits", rows)
        np.testing.assert_array_equal(await _outputs(session, url, "sealed", rows), plain)
        np.testing.assert_allclose(await _outputs(session, url, "sealed_ir", rows), plain, rtol=1e-4, atol=1e-5)
    cache = state / "ov-cache"
    assert not cache.exists() or not any(cache.iterdir())  # no compiled model in the clear on disk


async def test_wrong_key_or_tampering_refuses_only_that_version(repository: Path, tmp_path: Path) -> None:
    for name in ("tampered", "resealed", "wrong_key"):
        _copy(repository, "digits", name)
    key_file, other_key = tmp_path / "model.key", tmp_path / "other.key"
    for name in ("tampered", "resealed"):
        assert _encrypt(repository, f"{name}/1", key_file) == 0
    assert _encrypt(repository, "wrong_key/1", other_key) == 0
    sealed = repository / "tampered" / "1" / "model.onnx.enc"
    data = bytearray(sealed.read_bytes())
    data[100] ^= 1
    sealed.write_bytes(bytes(data))
    # An attacker who also fixes the manifest's hash is stopped by AES-GCM's tag.
    resealed = repository / "resealed" / "1" / "model.onnx.enc"
    data = bytearray(resealed.read_bytes())
    data[-1] ^= 1
    resealed.write_bytes(bytes(data))
    manifest_path = repository / "resealed" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.onnx.enc"] = sha256_file(resealed)
    manifest_path.write_text(json.dumps(manifest))
    settings = settings_for(repository, tmp_path / "state", auth={"model_key_file": key_file})
    async with running(settings, health="live") as url, aiohttp.ClientSession() as session:
        states = await _states(session, url, 4)
        assert states["digits"][0] == "READY"
        assert states["tampered"][0] == "UNAVAILABLE" and "integrity check failed" in states["tampered"][1]
        assert states["resealed"][0] == "UNAVAILABLE" and "failed authentication" in states["resealed"][1]
        assert states["wrong_key"][0] == "UNAVAILABLE" and "wrong key" in states["wrong_key"][1]
        rows = np.ones((1, 64), np.float32)
        await _outputs(session, url, "digits", rows)  # the others keep serving
        async with session.post(f"{url}/v2/models/wrong_key/versions/1/infer", json=DIGITS_ROW) as response:
            assert response.status == 503 and "wrong key" in (await response.json())["error"]


async def test_missing_key_is_reported(repository: Path, tmp_path: Path) -> None:
    _copy(repository, "digits", "sealed")
    assert _encrypt(repository, "sealed/1", tmp_path / "model.key") == 0
    async with running(settings_for(repository, tmp_path / "state"), health="live") as url, \
            aiohttp.ClientSession() as session:
        states = await _states(session, url, 2)
        assert states["digits"][0] == "READY" and states["sealed"][0] == "UNAVAILABLE"
        assert "no model key is configured" in states["sealed"][1]
        assert str(tmp_path / "state" / "keys" / "model.key") in states["sealed"][1]
