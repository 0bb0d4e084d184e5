"""Bad input is refused with one clear line and nothing published; un-normalised input is rescued."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from optimizer_helpers import raw_feature_model

from modelrepo import list_versions, read_manifest
from optimizer import OptimizeRequest, optimize
from optimizer.__main__ import main as optimizer_main


def _run(repository: Path, source: Path | None = None, calibration: Path | None = None,
         *extra: str) -> int:
    data = repository / "digits" / "data"
    argv = [str(source or repository / "digits" / "1"),
            "--calibration", str(calibration or data / "calibration.npz"),
            "--eval", str(data / "eval.npz"), "--name", "digits", "--repository", str(repository),
            "--bench-seconds", "0.05", "--quiet", *extra]
    return optimizer_main(argv)


def _custom_op_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("FancyScale", ["input"], ["probabilities"], name="mystery", domain="com.example")],
        "custom", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    onnx.save_model(model, str(path))
    return path


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


CASES = {
    "corrupt source": (lambda tmp: {"source": _bytes(tmp / "corrupt.onnx", b"\x08\x07garbage" * 50)},
                       "is not"),
    "text source": (lambda tmp: {"source": _bytes(tmp / "notes.onnx", b"hello, I am not a model\n")},
                    "is not"),
    "missing source": (lambda tmp: {"source": tmp / "nowhere.onnx"}, "does not exist"),
    "unsupported operator": (lambda tmp: {"source": _custom_op_model(tmp / "custom.onnx")},
                             "unsupported operator com.example::FancyScale"),
    "wrong input name": (lambda tmp: {"calibration": _npz(tmp / "c.npz", pixels=np.ones((8, 64), np.float32))},
                         "lacks array(s) input"),
    "wrong shape": (lambda tmp: {"calibration": _npz(tmp / "c.npz", input=np.ones((8, 63), np.float32))},
                    "has 63 along axis 1"),
    "wrong dtype": (lambda tmp: {"calibration": _npz(tmp / "c.npz", input=np.ones((8, 64), np.float64))},
                    "is float64 but the model expects float32"),
    "empty calibration": (lambda tmp: {"calibration": _npz(tmp / "c.npz", input=np.ones((0, 64), np.float32))},
                          "is empty"),
    "not an npz": (lambda tmp: {"calibration": _bytes(tmp / "c.npz", b"not a zip")},
                   "not a readable .npz"),
}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line_and_publishes_nothing(
        case: str, repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, expected = CASES[case]
    before = sorted(p.name for p in (repository / "digits").iterdir())
    code = _run(repository, **make(tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("appliance optimize: error: ") and expected in err
    assert sorted(p.name for p in (repository / "digits").iterdir()) == before


def test_hugging_face_folder_is_refused_clearly(repository: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert _run(repository, source=folder) == 2
    assert "Hugging Face model folder" in capsys.readouterr().err


def test_appliance_cli_runs_the_optimizer(repository: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli import main as appliance_main

    data = repository / "digits" / "data"
    code = appliance_main(["optimize", str(repository / "digits" / "1"), "--calibration",
                           str(tmp_path / "missing.npz"), "--eval", str(data / "eval.npz"), "--quiet"])
    assert code == 2
    assert "calibration data" in capsys.readouterr().err


def test_optimizer_imports_without_the_appliance_package() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['appliance'] = None\n"
            "import optimizer.cli, optimizer.pipeline, optimizer.bundled, optimizer.__main__")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unwritable_repository_is_refused(repository: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the repository should be")
    data = repository / "digits" / "data"
    code = optimizer_main([str(repository / "digits" / "1"), "--calibration", str(data / "calibration.npz"),
                           "--name", "digits", "--repository", str(blocker / "repo"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is not writable" in err and str(blocker / "repo") in err
    assert list_versions(repository / "digits") == [1]


def test_un_normalised_input_collapses_naively_and_the_fallback_rescues_it(tmp_path: Path) -> None:
    source, calibration, evaluation = raw_feature_model(tmp_path / "raw")
    naive = _naive_int8_accuracy(source, calibration, evaluation, tmp_path)
    result = optimize(OptimizeRequest(source=source, calibration=calibration, evaluation=evaluation,
                                      name="raw", repository=tmp_path / "repo", bench_seconds=0.05,
                                      quiet=True, min_speedup=0.0))
    assert result.versions == [1, 2]
    for version in result.versions:
        manifest = read_manifest(tmp_path / "repo" / "raw" / str(version))
        gate = manifest.metrics["accuracy"]
        assert gate["reference"] > 0.95 and gate["passed"], gate
        assert naive < gate["reference"] - 0.5  # naive INT8 really had collapsed
        assert "dense_raw" in manifest.optimizer["float_nodes"]
        assert "dense_out" not in manifest.optimizer["float_nodes"]


def _naive_int8_accuracy(source: Path, calibration: Path, evaluation: Path, tmp: Path) -> float:
    """Plain per-tensor static INT8, no fallback: what a naive pipeline would ship."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with np.load(calibration) as npz:
        rows = [{"features": npz["features"][i:i + 1]} for i in range(len(npz["features"]))]

    class Reader:
        def __init__(self) -> None:
            self.items = iter(rows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    target = tmp / "naive.onnx"
    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    with np.load(evaluation) as npz:
        predicted = session.run(None, {"features": npz["features"]})[0].argmax(axis=1)
        return float((predicted == npz["labels"]).mean())
