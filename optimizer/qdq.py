"""ONNX INT8 through ONNX Runtime static QDQ quantization, with a float fallback for sensitive nodes.

Settings from trials on this hardware: per-channel signed weights and *unsigned* activations (signed
activations left most convolutions unfused and ran slower than FP32), after ONNX Runtime's
pre-processing (shape inference + graph optimization). When the gate fails, the nodes whose
quantization costs most are kept in float, one at a time, until it passes; the calibration
ranges are cached so each retry only rewrites the graph. A source may name its sensitive nodes
up front (a transformer's FFN down-projections, whose inputs are heavy-tailed: static INT8 with
defaults took all-MiniLM-L6-v2 to cosine ~0.84); those are tried in float instead of ranking dozens
of layers one by one. Dynamic INT8 (activation ranges computed per call) is the next rung.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.errors import OptimizerError
from optimizer.evaluate import GateResult, score
from optimizer.job import Candidate, Job
from optimizer.outputs import onnx_output_nodes
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
    details: dict[str, Any] = {"mode": "static-qdq", "activation_type": "QUInt8", "weight_type": "QInt8",
                               "per_channel": True, "float_outputs": _output_nodes(job, prepared)}
    if not gate.passed:
        job.progress.note(f"onnx: {gate.describe()}; trying float fallback for sensitive nodes")
        details["before_fallback"] = gate.to_dict()
        hinted = list(job.source.sensitive_nodes)
        if hinted:
            details["op_types"] = list(_COMPUTE_OPS)
        excluded, outputs, gate = (_in_float(job, prepared, target, hinted) if hinted
                                   else _fallback(job, prepared, target))
    details["float_nodes"] = excluded
    return Candidate("onnx", "int8", directory, "model.onnx", gate, outputs, details)


def quantize_onnx_dynamic(job: Job) -> Candidate:
    """Dynamic INT8: weights quantized offline, activation ranges computed per call (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = job.workdir / "onnx-preprocessed.onnx"
    if not prepared.exists():
        prepared = _preprocess(job)
    directory = job.workdir / "onnx-dynamic"
    directory.mkdir(exist_ok=True)
    target = directory / "model.onnx"
    try:
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=_output_nodes(job, prepared))
    except Exception as exc:
        raise OptimizerError(f"ONNX Runtime dynamic quantization failed: {str(exc).splitlines()[0][:300]}") from None
    outputs, gate = job.evaluate(_predictor(target), "evaluating ONNX dynamic INT8")
    details = {"mode": "dynamic", "activation_type": "QUInt8 (per call)", "weight_type": "QInt8",
               "per_channel": True, "float_nodes": [], "float_outputs": _output_nodes(job, prepared)}
    return Candidate("onnx", "int8", directory, "model.onnx", gate, outputs, details)


def _preprocess(job: Job) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = (job.workdir / "onnx-preprocessed.onnx").resolve()
    source = job.model_path.resolve()
    # Symbolic shape inference gives up on exported transformers; ONNX's own inference then suffices.
    for skip_symbolic in (False, True):
        try:
            # ORT's symbolic shape inference drops a temp model + external data into the cwd on failure.
            with contextlib.chdir(job.workdir):
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=skip_symbolic)
            return prepared
        except Exception as exc:  # pre-processing is an optimization; quantize the original without it
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
    job.progress.note(f"onnx: pre-processing skipped ({error})")
    shutil.copyfile(job.model_path, prepared)
    return prepared


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over the calibration items."""

    def __init__(self, items: list[Inputs]) -> None:
        self._items = iter(items)

    def get_next(self) -> Inputs | None:
        return next(self._items, None)


def _quantize(job: Job, prepared: Path, target: Path, excluded: list[str],
              op_types: tuple[str, ...] | None = None) -> None:
    """Static QDQ; ``op_types`` limits it to those nodes (all ONNX Runtime supports by default)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cache = job.workdir / "ort-calibration.json"
    items = [] if cache.exists() else list(job.progress.bar(job.calibration_items(), "calibrating (ONNX)"))
    try:
        quantize_static(
            str(prepared), str(target), _Reader(items) if items else None,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=[*excluded, *_output_nodes(job, prepared)],
            calibration_cache_path=str(cache), op_types_to_quantize=list(op_types) if op_types else None,
        )
    except Exception as exc:
        raise OptimizerError(f"ONNX Runtime quantization failed: {str(exc).splitlines()[0][:300]}") from None


def _output_nodes(job: Job, prepared: Path) -> list[str]:
    """The ops that shape the answer stay float (see :mod:`optimizer.outputs`) unless asked otherwise."""
    return [] if job.quantize_outputs else onnx_output_nodes(prepared)


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


def _in_float(job: Job, prepared: Path, target: Path, nodes: list[str]) -> tuple[list[str], np.ndarray, GateResult]:
    """Quantize again: compute nodes only (masks and softmax stay float), known-sensitive nodes in float.

    With every op type quantized, the attention-mask arithmetic (additive masks near float32's
    minimum) shares a per-tensor range with real values: all-MiniLM-L6-v2 fell to cosine ~0.4.
    """
    _quantize(job, prepared, target, nodes, _COMPUTE_OPS)
    outputs, gate = job.evaluate(_predictor(target), f"evaluating ONNX INT8 ({len(nodes)} float)")
    return nodes, outputs, gate


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
