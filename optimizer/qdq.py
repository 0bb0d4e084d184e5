"""ONNX INT8 through ONNX Runtime static QDQ quantization, with a float fallback for sensitive nodes.

Settings from trials on this hardware: per-channel signed weights and *unsigned* activations (signed
activations left most convolutions unfused and ran slower than FP32), after ONNX Runtime's
pre-processing (shape inference + graph optimization). When the gate fails, the nodes whose
quantization costs most are kept in float, one at a time, until it passes; the calibration
ranges are cached so each retry only rewrites the graph.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.errors import OptimizerError
from optimizer.evaluate import GateResult, score
from optimizer.job import Candidate, Job
from optimizer.runtimes import Inputs, onnxruntime_predict, onnxruntime_session, predict_all

#: Node types worth keeping in float: they carry the weights whose inputs get quantized.
_COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Nodes ranked for the fallback (first and last layers are the usual suspects), and kept in float.
MAX_RANKED = 16
MAX_FLOAT_NODES = 8
RANKING_ROWS = 200


def quantize_onnx(job: Job) -> Candidate:
    """Quantize ``job.model_path``; fall back to float for the costliest nodes if the gate fails."""
    prepared = _preprocess(job)
    directory = job.workdir / "onnx"
    directory.mkdir(exist_ok=True)
    target = directory / "model.onnx"
    excluded: list[str] = []
    _quantize(job, prepared, target, excluded)
    outputs, gate = job.evaluate(_predictor(target), "evaluating ONNX INT8")
    if not gate.passed:
        job.progress.note(f"onnx: {gate.describe()}; trying float fallback for sensitive nodes")
        excluded, outputs, gate = _fallback(job, prepared, target)
    details = {"mode": "static-qdq", "activation_type": "QUInt8", "weight_type": "QInt8",
               "per_channel": True, "float_nodes": excluded}
    return Candidate("onnx", "int8", directory, "model.onnx", gate, outputs, details)


def _preprocess(job: Job) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = job.workdir / "onnx-preprocessed.onnx"
    try:
        quant_pre_process(str(job.model_path), str(prepared), skip_symbolic_shape=False)
    except Exception as exc:  # pre-processing is an optimization; quantize the original without it
        job.progress.note(f"onnx: pre-processing skipped ({type(exc).__name__}: {str(exc)[:120]})")
        shutil.copyfile(job.model_path, prepared)
    return prepared


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over the calibration items."""

    def __init__(self, items: list[Inputs]) -> None:
        self._items = iter(items)

    def get_next(self) -> Inputs | None:
        return next(self._items, None)


def _quantize(job: Job, prepared: Path, target: Path, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cache = job.workdir / "ort-calibration.json"
    items = [] if cache.exists() else list(job.progress.bar(job.calibration_items(), "calibrating (ONNX)"))
    try:
        quantize_static(
            str(prepared), str(target), _Reader(items) if items else None,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(excluded),
            calibration_cache_path=str(cache),
        )
    except Exception as exc:
        raise OptimizerError(f"ONNX Runtime quantization failed: {str(exc).splitlines()[0][:300]}") from None


def _predictor(path: Path) -> Any:
    return onnxruntime_predict(onnxruntime_session(path))


def _fallback(job: Job, prepared: Path, target: Path) -> tuple[list[str], np.ndarray, GateResult]:
    """Greedy: rank candidate nodes by the gain from keeping each alone in float, then add in order."""
    ranked = _rank(job, prepared, target)
    excluded: list[str] = []
    outputs, gate = np.empty(0), None
    for name in ranked[:MAX_FLOAT_NODES]:
        excluded.append(name)
        _quantize(job, prepared, target, excluded)
        outputs, gate = job.evaluate(_predictor(target), f"evaluating ONNX INT8 ({len(excluded)} float)")
        if gate.passed:
            break
    if gate is None:
        raise OptimizerError("ONNX fallback found no node to keep in float")
    return excluded, outputs, gate


def _rank(job: Job, prepared: Path, target: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    nodes = [node.name for node in graph.node if node.op_type in _COMPUTE_OPS]
    if len(nodes) > MAX_RANKED:
        nodes = nodes[: MAX_RANKED // 2] + nodes[-MAX_RANKED // 2:]
    subset = job.evaluation.head(RANKING_ROWS)
    reference = job.reference[: subset.rows]
    gains: dict[str, float] = {}
    for name in job.progress.bar(nodes, "ranking ONNX nodes"):
        _quantize(job, prepared, target, [name])
        outputs = predict_all(_predictor(target), subset.batches(job.eval_batch))
        gains[name] = score(job.metric, outputs, reference, subset.labels)
    return sorted(gains, key=lambda name: gains[name], reverse=True)
