"""Benchmark the FP32 baselines and every candidate, producing the report's rows."""

from __future__ import annotations

from typing import Any

from optimizer.benchmark import Speed, measure, size_on_disk
from optimizer.job import Candidate, Job
from optimizer.report import Row
from optimizer.runtimes import (
    compile_openvino,
    inference_precision,
    onnxruntime_predict,
    onnxruntime_session,
    openvino_predict,
)

RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}
SPARSE_RATE = "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"


def benchmark_rows(job: Job, candidates: list[Candidate], max_batch: int, seconds: float) -> list[Row]:
    """Baselines first (one per runtime in use), then one row per candidate."""
    rows = [_baseline(job, fmt, max_batch, seconds) for fmt in dict.fromkeys(c.format for c in candidates)]
    rows += [_candidate_row(job, c, max_batch, seconds) for c in candidates]
    return rows


def _speed(job: Job, fmt: str, model: Any, max_batch: int, seconds: float, desc: str,
           config: dict[str, Any] | None = None) -> tuple[Speed, str]:
    if fmt == "openvino":
        compiled = compile_openvino(model, config)
        predict, note = openvino_predict(compiled), f"precision {inference_precision(compiled)}"
    else:
        predict, note = onnxruntime_predict(onnxruntime_session(model)), ""
    single = job.fixed_batch or 1
    speed = measure(predict, job.evaluation.inputs, single=single, max_batch=max_batch,
                    seconds=seconds, progress=job.progress, desc=desc)
    return speed, note


def _baseline(job: Job, fmt: str, max_batch: int, seconds: float) -> Row:
    speed, note = _speed(job, fmt, job.source.onnx_path, max_batch, seconds, f"benchmark {fmt} fp32")
    note = f"FP32 source as {RUNTIMES[fmt]} runs it by default ({note})" if note else ""
    return Row(f"{fmt} fp32", fmt, RUNTIMES[fmt], "fp32", job.metric, job.reference_score, 0.0,
               job.source.onnx_path.stat().st_size,
               speed, "baseline", note=note)


def _candidate_row(job: Job, candidate: Candidate, max_batch: int, seconds: float) -> Row:
    gate = candidate.gate
    row = Row(f"{candidate.format} {candidate.precision}", candidate.format, RUNTIMES[candidate.format],
              candidate.precision, job.metric, gate.optimized if gate else None,
              gate.drop if gate else None, 0, None, "published")
    if not candidate.passed:
        row.status = "failed" if candidate.error else "refused"
        row.note = candidate.error or (gate.describe() if gate else "")
        return row
    row.size_bytes = size_on_disk(candidate.directory)
    model = candidate.directory / candidate.model_file
    row.speed, note = _speed(job, candidate.format, model, max_batch, seconds, f"benchmark {row.artifact}")
    if candidate.format == "openvino" and job.pruning:
        note = _try_sparse(job, candidate, row, max_batch, seconds)
    row.note = note
    return row


def _try_sparse(job: Job, candidate: Candidate, row: Row, max_batch: int, seconds: float) -> str:
    """Sparse-weight decompression pays only on large sparse INT8 FC layers: measure, keep if faster."""
    rate = max(0.0, round(float(job.pruning["achieved_sparsity"]) - 0.05, 2))
    config = {SPARSE_RATE: rate}
    sparse, _ = _speed(job, "openvino", candidate.directory / candidate.model_file, max_batch, seconds,
                       f"benchmark {row.artifact} sparse", config)
    if row.speed is None:
        return ""
    if sparse.throughput_rows_s > row.speed.throughput_rows_s * 1.10:  # below 10 % is noise
        candidate.details["runtime_config"] = config
        gain = sparse.throughput_rows_s / row.speed.throughput_rows_s
        row.speed = sparse
        return f"sparse-weight decompression (rate {rate}) kept: {gain:.2f}x throughput"
    gain = sparse.throughput_rows_s / row.speed.throughput_rows_s
    return f"sparse-weight decompression (rate {rate}) not kept: {gain:.2f}x throughput"
