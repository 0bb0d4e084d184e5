"""The optimizer on the bundled digits sample: both formats published, gated, loadable, accurate."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from optimizer_helpers import copy_repository

from modelrepo import list_versions, read_manifest, sha256_file, verify_files
from optimizer import GateRefused, OptimizeRequest, optimize
from optimizer.__main__ import main as optimizer_main

FAST = {"bench_seconds": 0.05, "quiet": True}


@pytest.fixture(scope="module")
def published(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    repo = copy_repository(digits_repository, tmp_path_factory.mktemp("digits") / "repo")
    data = repo / "digits" / "data"
    result = optimize(OptimizeRequest(source=repo / "digits" / "1", calibration=data / "calibration.npz",
                                      evaluation=data / "eval.npz", **FAST))
    return repo, result


def _eval(repo: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(repo / "digits" / "data" / "eval.npz") as npz:
        return npz["input"], npz["labels"]


def test_publishes_one_version_per_format_with_verified_manifests(published: tuple[Path, object]) -> None:
    repo, result = published
    model_dir = repo / "digits"
    assert result.versions == [2, 3]
    assert list_versions(model_dir) == [1, 2, 3]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".staging")]
    formats = {}
    for version in (2, 3):
        manifest = read_manifest(model_dir / str(version))
        assert verify_files(model_dir / str(version), manifest) == []
        assert manifest.precision == "int8" and manifest.parent_version == 1
        formats[manifest.format] = manifest
    assert formats["openvino"].model_file == "model.xml"
    assert formats["onnx"].model_file == "model.onnx"
    for manifest in formats.values():
        gate = manifest.metrics["accuracy"]
        assert gate["passed"] and gate["drop_points"] <= 1.0 and gate["optimized"] > 0.95
        speed = manifest.metrics["artifact"]["speed"]
        assert speed["latency_p50_ms"] > 0 and speed["latency_p99_ms"] >= speed["latency_p50_ms"]
        assert speed["throughput_rows_s"] > 0 and speed["max_batch"] == 64
        assert manifest.metrics["artifact"]["speedup_latency"] > 0
        assert {row["status"] for row in manifest.metrics["report"]} == {"baseline", "published"}
        baseline = manifest.metrics["baseline"]
        assert abs(sum(baseline["class_distribution"]) - 1.0) < 1e-6
        assert len(baseline["feature_mean"]) == 64
        provenance = manifest.provenance
        assert provenance["source_sha256"] == sha256_file(model_dir / "1" / "model.onnx")
        assert provenance["calibration"]["sha256"] == sha256_file(model_dir / "data" / "calibration.npz")
        assert provenance["eval"]["sha256"] == sha256_file(model_dir / "data" / "eval.npz")
        assert manifest.optimizer["parameters"]["max_accuracy_drop"] == 1.0
        assert {"openvino", "nncf", "onnxruntime"} <= manifest.optimizer["libraries"].keys()


def test_published_openvino_ir_loads_and_keeps_accuracy(published: tuple[Path, object]) -> None:
    import openvino as ov

    repo, _ = published
    version = _version_of(repo, "openvino")
    x, labels = _eval(repo)
    compiled = ov.Core().compile_model(str(repo / "digits" / str(version) / "model.xml"), "CPU")
    accuracy = float((np.asarray(compiled(x)[0]).argmax(axis=1) == labels).mean())
    assert accuracy >= _reference_accuracy(repo) - 0.01


def test_published_onnx_loads_and_keeps_accuracy(published: tuple[Path, object]) -> None:
    import onnxruntime as ort

    repo, _ = published
    version = _version_of(repo, "onnx")
    x, labels = _eval(repo)
    session = ort.InferenceSession(str(repo / "digits" / str(version) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert any(node.op_type == "QuantizeLinear" for node in _graph(repo, version).node)
    accuracy = float((session.run(None, {"input": x})[0].argmax(axis=1) == labels).mean())
    assert accuracy >= _reference_accuracy(repo) - 0.01


def test_existing_model_toml_is_left_alone(published: tuple[Path, object], digits_repository: Path) -> None:
    repo, _ = published
    assert (repo / "digits" / "model.toml").read_bytes() == (digits_repository / "digits" / "model.toml").read_bytes()


def test_report_table_names_every_artifact(published: tuple[Path, object]) -> None:
    _, result = published
    table = result.table()
    for label in ("onnxruntime fp32", "openvino fp32 (default: ", "openvino int8 → v2", "onnx int8 → v3",
                  "p50 ms", "rows/s", "serve", "out diff", "the best FP32 baseline"):
        assert label in table


def test_cli_publishes_into_new_repository_with_generated_model_toml(
        digits_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = digits_repository / "digits" / "data"
    code = optimizer_main([str(digits_repository / "digits" / "1" / "model.onnx"), "--name", "digits-int8",
                           "--calibration", str(data / "calibration.npz"), "--eval", str(data / "eval.npz"),
                           "--format", "onnx", "--repository", str(tmp_path), "--bench-seconds", "0.05",
                           "--quiet"])
    assert code == 0
    assert "published digits-int8/1" in capsys.readouterr().out
    config = tomllib.loads((tmp_path / "digits-int8" / "model.toml").read_text())
    assert config["max_batch_size"] == 64 and config["version_policy"] == {"latest": 1}
    assert config["input"] == [{"name": "input", "datatype": "FP32", "dims": [64]}]
    assert config["output"] == [{"name": "probabilities", "datatype": "FP32", "dims": [10]}]
    manifest = read_manifest(tmp_path / "digits-int8" / "1")
    assert manifest.format == "onnx" and manifest.parent_version is None


def test_over_pruned_artifacts_are_refused_and_the_unpruned_ones_published(
        repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = repository / "digits" / "data"
    code = optimizer_main([str(repository / "digits" / "1"), "--calibration", str(data / "calibration.npz"),
                           "--eval", str(data / "eval.npz"), "--prune", "0.95", "--quiet", "--bench-seconds", "0.05"])
    captured = capsys.readouterr()
    assert code == 0
    assert "openvino (pruned): refused: accuracy" in captured.out
    assert "onnx (pruned): refused: accuracy" in captured.out and "vs FP32 0.9" in captured.out
    for version in (2, 3):
        manifest = read_manifest(repository / "digits" / str(version))
        assert "pruning" not in manifest.optimizer and manifest.metrics["accuracy"]["passed"]
    assert "pruned" in captured.out and "95%" in captured.out  # sparsity shown beside speed and size


def test_pruned_artifact_is_published_only_when_it_beats_the_unpruned_one(repository: Path) -> None:
    data = repository / "digits" / "data"
    common = {"source": repository / "digits" / "1", "formats": ("openvino",), "prune": 0.5,
              "calibration": data / "calibration.npz", "evaluation": data / "eval.npz", **FAST}
    # A margin no pruned model can clear: the unpruned artifact is published, the pruned one is not.
    lost = optimize(OptimizeRequest(min_speedup=100.0, **common))
    manifest = read_manifest(repository / "digits" / str(lost.versions[0]))
    assert lost.versions == [2] and "pruning" not in manifest.optimizer
    pruned_row = next(row for row in lost.rows if row.sparsity is not None)
    assert pruned_row.status == "refused" and "pruning does not pay here" in pruned_row.note
    assert pruned_row.sparsity == pytest.approx(0.5, abs=0.01) and pruned_row.speed is not None
    # A zero margin: the pruned artifact wins and supersedes the unpruned one.
    won = optimize(OptimizeRequest(min_speedup=0.0, **common))
    manifest = read_manifest(repository / "digits" / str(won.versions[0]))
    assert won.versions == [3] and manifest.serve
    assert manifest.optimizer["pruning"]["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert manifest.optimizer["parameters"]["prune"] == 0.5 and manifest.metrics["accuracy"]["passed"]
    assert {row.status for row in won.rows if row.format == "openvino" and row.precision == "int8"} == {
        "published", "superseded"}
    assert "sparsity" in won.table() and "50%" in won.table()


def test_gate_refusal_raises_from_the_library(repository: Path) -> None:
    data = repository / "digits" / "data"
    with pytest.raises(GateRefused, match=r"onnx: refused.*output diff"):
        optimize(OptimizeRequest(source=repository / "digits" / "1", formats=("onnx",),
                                 calibration=data / "calibration.npz", evaluation=data / "eval.npz",
                                 max_output_diff=0.0, **FAST))
    assert list_versions(repository / "digits") == [1]


def _version_of(repo: Path, fmt: str) -> int:
    for version in list_versions(repo / "digits"):
        if read_manifest(repo / "digits" / str(version)).format == fmt and version > 1:
            return version
    raise AssertionError(f"no {fmt} version")


def _reference_accuracy(repo: Path) -> float:
    manifest = json.loads((repo / "digits" / "2" / "manifest.json").read_text())
    return float(manifest["metrics"]["accuracy"]["reference"])


def _graph(repo: Path, version: int):
    import onnx

    return onnx.load(str(repo / "digits" / str(version) / "model.onnx")).graph


@pytest.mark.parametrize("metric", ["top1-agreement", "cosine", "mse"])
def test_reference_metrics_gate_against_the_fp32_outputs(metric: str, repository: Path) -> None:
    data = repository / "digits" / "data"
    result = optimize(OptimizeRequest(source=repository / "digits" / "1", formats=("openvino",), metric=metric,
                                      calibration=data / "calibration.npz", evaluation=data / "eval.npz", **FAST))
    gate = read_manifest(repository / "digits" / str(result.versions[0])).metrics["accuracy"]
    assert gate["metric"] == metric and gate["passed"]
    assert gate["reference"] == (0.0 if metric == "mse" else 1.0)
