"""Benchmark the best FP32 ways this host runs the source and every candidate, as report rows.

Baselines: ONNX Runtime FP32, OpenVINO with its default precision (bf16 on CPUs that have it),
and OpenVINO at real f32 when the default is something else. All of them and every candidate are
timed side by side under one :class:`~optimizer.benchmark.Protocol`, so the speed gate compares
each candidate with the *best* of them, not with its own runtime's FP32 run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from optimizer.benchmark import Protocol, measure_all, size_on_disk
from optimizer.job import Candidate, Job
from optimizer.report import Row
from optimizer.runtimes import (
    F32,
    Predict,
    compile_openvino,
    inference_precision,
    onnxruntime_predict,
    onnxruntime_session,
    openvino_predict,
)

RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}
SPARSE_RATE = "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"
#: Sparse-weight decompression is kept only above this throughput gain (below it is noise).
SPARSE_GAIN = 1.10


def benchmark_rows(job: Job, candidates: list[Candidate], protocol: Protocol) -> list[Row]:
    """Baseline rows first, then one row per candidate (timed only if it passed the accuracy gate)."""
    predictors: dict[str, Predict] = {}
    rows = _baselines(job, predictors)
    for candidate in candidates:
        rows.append(_candidate_row(job, candidate, predictors))
    speeds = measure_all(predictors, job.evaluation.inputs, protocol, job.progress)
    for row in rows:
        row.speed = speeds.get(row.artifact, row.speed)
    for row, candidate in zip(rows[-len(candidates):] if candidates else [], candidates, strict=True):
        if candidate.passed and candidate.format == "openvino" and candidate.details.get("pruning"):
            _try_sparse(job, candidate, row, protocol)
    return rows


def _baselines(job: Job, predictors: dict[str, Predict]) -> list[Row]:
    source = job.source.onnx_path
    size = source.stat().st_size
    predictors["onnxruntime fp32"] = onnxruntime_predict(onnxruntime_session(source))
    rows = [_baseline_row(job, "onnxruntime fp32", "onnx", "onnxruntime", size, "FP32 source on ONNX Runtime")]
    default = compile_openvino(source)
    precision = inference_precision(default)
    name = f"openvino fp32 (default: {precision})"
    predictors[name] = openvino_predict(default)
    rows.append(_baseline_row(job, name, "openvino", "openvino", size,
                              f"FP32 source as OpenVINO runs it by default (precision {precision})"))
    if precision != "f32":
        predictors["openvino fp32 (f32)"] = openvino_predict(compile_openvino(source, F32))
        rows.append(_baseline_row(job, "openvino fp32 (f32)", "openvino", "openvino", size,
                                  "FP32 source on OpenVINO pinned to f32", config=F32))
    return rows


def _baseline_row(job: Job, name: str, fmt: str, runtime: str, size: int, note: str,
                  config: dict[str, Any] | None = None) -> Row:
    row = Row(name, fmt, runtime, "fp32", job.metric, job.reference_score, 0.0, size, None, "baseline",
              note=note)
    row.runtime_config = dict(config or {})
    return row


def _candidate_row(job: Job, candidate: Candidate, predictors: dict[str, Predict]) -> Row:
    gate = candidate.gate
    label = f"{candidate.format} {candidate.precision}" + (" pruned" if candidate.details.get("pruning") else "")
    row = Row(label, candidate.format, RUNTIMES[candidate.format], candidate.precision, job.metric,
              gate.optimized if gate else None, gate.drop if gate else None, 0, None, "published")
    if gate is not None:
        row.output_diff = gate.output_diff
    if candidate.details.get("pruning"):
        row.sparsity = float(candidate.details["pruning"]["achieved_sparsity"])
    if not candidate.passed:
        row.status = "failed" if candidate.error else "refused"
        row.note = candidate.error or (gate.describe() if gate else "")
        return row
    row.size_bytes = size_on_disk(candidate.directory)
    predictors[label] = _predictor(candidate)
    return row


def _predictor(candidate: Candidate, config: dict[str, Any] | None = None) -> Predict:
    model = candidate.directory / candidate.model_file
    if candidate.format == "openvino":
        return openvino_predict(compile_openvino(model, config))
    return onnxruntime_predict(onnxruntime_session(model))


def _try_sparse(job: Job, candidate: Candidate, row: Row, protocol: Protocol) -> None:
    """Sparse-weight decompression pays only on large sparse INT8 FC layers: measure, keep if faster."""
    rate = max(0.0, round(float(candidate.details["pruning"]["achieved_sparsity"]) - 0.05, 2))
    config = {SPARSE_RATE: rate}
    speeds = measure_all({"dense": _predictor(candidate), "sparse": _predictor(candidate, config)},
                         job.evaluation.inputs, protocol, job.progress)
    gain = speeds["sparse"].throughput_rows_s / speeds["dense"].throughput_rows_s
    if gain > SPARSE_GAIN:
        candidate.details["runtime_config"] = config
        # Timed apart from the baselines: drop its rounds so the gate does not pair them with theirs.
        row.speed = replace(speeds["sparse"], round_latency_ms=(), round_throughput=())
        row.note = f"sparse-weight decompression (rate {rate}) kept: {gain:.2f}x throughput"
    else:
        row.note = f"sparse-weight decompression (rate {rate}) not kept: {gain:.2f}x throughput"
