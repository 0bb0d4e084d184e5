"""Build the bundled sample model ``digits`` from data scikit-learn ships (no hub download).

``digits`` is a small MLP classifier over 8×8 handwritten digits. Its input is the raw pixel
intensities (0–16) exactly as ``sklearn.datasets.load_digits`` gives them; the graph scales them
itself, as production models fed un-normalised features often do. Version 1 is the FP32 ONNX
source; the optimizer (``appliance optimize``) publishes INT8 versions beside it.

Also writes ``<repository>/digits/data/{calibration,eval}.npz`` (one array per input, ``labels``
in eval) so the optimizer and the tests have held-out data.

Usage: ``python models/build_samples.py [--repository DIR] [--force] [--with-int8 | --fp32-only]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent
MODEL = "digits"
INPUT = "input"
OUTPUT = "probabilities"
HIDDEN = 128
SEED = 20261129

MODEL_TOML = """\
# Serving configuration of the bundled sample model (see docs/configuration.md).
runtime = "auto"          # openvino for IR, onnxruntime for .onnx (or name one)
max_batch_size = 64
labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
description = "8x8 handwritten digit classifier (scikit-learn digits), raw 0-16 pixel input"

[version_policy]
latest = 1

[[input]]
name = "input"
datatype = "FP32"
dims = [64]

[[output]]
name = "probabilities"
datatype = "FP32"
dims = [10]

[batching]
max_queue_delay_us = 500

[cache]
enabled = true
"""


def _train(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=400, random_state=SEED)
    clf.fit(x / 16.0, y)
    return [(w.astype(np.float32), b.astype(np.float32)) for w, b in
            zip(clf.coefs_, clf.intercepts_, strict=True)]


def _onnx_model(layers: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The MLP as an ONNX graph: scale → Gemm → Relu → Gemm → Softmax, batch dimension dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (w1, b1), (w2, b2) = layers
    inits = [
        numpy_helper.from_array(np.array([1.0 / 16.0], dtype=np.float32), "scale"),
        numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Mul", [INPUT, "scale"], ["scaled"], name="scale_pixels"),
        helper.make_node("Gemm", ["scaled", "w1", "b1"], ["hidden_pre"], name="dense1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu1"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="dense2"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="model-appliance/build_samples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_digits(repository: Path = REPOSITORY, *, force: bool = False) -> Path:
    """Train, export and publish ``digits`` version 1; returns the version directory."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from modelrepo import Manifest, publish_version, staging_directory

    model_dir = repository / MODEL
    version_dir = model_dir / "1"
    if version_dir.exists() and not force:
        return version_dir
    started = time.monotonic()
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_hold, y_train, y_hold = train_test_split(x, y, test_size=0.3, random_state=SEED,
                                                        stratify=y)
    x_cal, x_eval, _y_cal, y_eval = train_test_split(x_hold, y_hold, test_size=0.6,
                                                     random_state=SEED, stratify=y_hold)
    onnx_bytes = _onnx_model(_train(x_train, y_train))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    data_dir = model_dir / "data"
    data_dir.mkdir(exist_ok=True)
    np.savez(data_dir / "calibration.npz", **{INPUT: x_cal})
    np.savez(data_dir / "eval.npz", **{INPUT: x_eval, "labels": y_eval})
    if force and version_dir.exists():
        import shutil

        shutil.rmtree(version_dir)
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes(onnx_bytes)
        Manifest.for_directory(
            staging, format="onnx", precision="fp32", model_file="model.onnx",
            provenance={
                "source": "sklearn.datasets.load_digits",
                "trainer": f"sklearn.neural_network.MLPClassifier(hidden_layer_sizes=({HIDDEN},))",
                "seed": SEED,
                "train_rows": len(x_train), "calibration_rows": len(x_cal), "eval_rows": len(x_eval),
                "build_seconds": round(time.monotonic() - started, 2),
            },
        ).write(staging)
        return publish_version(model_dir, staging, version=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--force", action="store_true", help="rebuild even if version 1 exists")
    int8 = parser.add_mutually_exclusive_group()
    int8.add_argument("--with-int8", dest="int8", action="store_true", default=True,
                      help="also publish the INT8 OpenVINO and ONNX versions (default)")
    int8.add_argument("--fp32-only", dest="int8", action="store_false",
                      help="publish only the FP32 source version")
    args = parser.parse_args(argv)
    started = time.monotonic()
    path = build_digits(args.repository, force=args.force)
    print(f"digits: {path} ready in {time.monotonic() - started:.1f} s")
    if args.int8:
        return _publish_int8(args.repository)
    return 0


def _publish_int8(repository: Path) -> int:
    """INT8 versions through the optimizer (gated on accuracy, like any user model)."""
    started = time.monotonic()
    from optimizer import OptimizerError, optimize_bundled

    try:
        versions = optimize_bundled(repository)
    except OptimizerError as exc:
        print(f"digits: INT8 not published: {exc}", file=sys.stderr)
        return 1
    if not versions:
        print("digits: INT8 versions already present")
    else:
        print(f"digits: INT8 versions {versions} published in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
