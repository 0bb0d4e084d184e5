"""Helpers for the optimizer tests: a repository copy and a tiny un-normalised model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def raw_feature_model(directory: Path, seed: int = 7) -> tuple[Path, Path, Path]:
    """A classifier fed raw features: 8 informative ones near unit scale beside 4 counters up to 1e4.

    The first Gemm ignores the counters (zero weights), but per-tensor INT8 of its input spends the
    whole 8-bit range on them, so the informative features all round to one step: naive INT8
    predicts a single class. Keeping that first Gemm in float restores the accuracy.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    classes, informative, counters, hidden = 4, 8, 4, 16
    centers = rng.normal(0.0, 1.0, size=(classes, informative)).astype(np.float32)

    def sample(rows: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, size=rows)
        info = centers[labels] + rng.normal(0.0, 0.35, size=(rows, informative))
        noise = rng.uniform(0.0, 10_000.0, size=(rows, counters))
        return np.concatenate([info, noise], axis=1).astype(np.float32), labels.astype(np.int64)

    w1 = np.zeros((informative + counters, hidden), np.float32)
    w1[:informative, :informative] = np.eye(informative)
    w1[:informative, informative:] = -np.eye(informative)
    b1 = np.zeros(hidden, np.float32)
    # relu(x) - relu(-x) = x, so the second Gemm computes nearest-centre scores 2·c·x − |c|².
    w2 = np.concatenate([2 * centers.T, -2 * centers.T], axis=0).astype(np.float32)
    b2 = -(centers ** 2).sum(axis=1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["h"], name="dense_raw"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], name="dense_out"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes, "raw_features",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", informative + counters])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "raw.onnx"
    onnx.save_model(model, str(path))
    x_cal, _ = sample(256)
    x_eval, y_eval = sample(400)
    np.savez(directory / "calibration.npz", features=x_cal)
    np.savez(directory / "eval.npz", features=x_eval, labels=y_eval)
    return path, directory / "calibration.npz", directory / "eval.npz"
