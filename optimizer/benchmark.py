"""Latency at batch 1 and throughput at the model's max batch, measured on this host in one run.

Each configuration runs for a fixed wall time after a short warm-up, so a tiny model gets many
samples and a large one still finishes; p99 from fewer than ~100 samples is reported but rough.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.progress import Progress
from optimizer.runtimes import Inputs, Predict

WARMUP = 3
MIN_CALLS = 5
MAX_CALLS = 5000


@dataclass(frozen=True)
class Speed:
    latency_p50_ms: float
    latency_p99_ms: float
    throughput_rows_s: float
    max_batch: int
    latency_samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_inputs(inputs: dict[str, np.ndarray], rows: int) -> Inputs:
    """``rows`` rows taken from the data, tiled when the data has fewer (contiguous, for sharing)."""
    out = {}
    for name, array in inputs.items():
        reps = -(-rows // array.shape[0])
        tiled = np.concatenate([array] * reps, axis=0) if reps > 1 else array
        out[name] = np.ascontiguousarray(tiled[:rows])
    return out


def measure(predict: Predict, data: dict[str, np.ndarray], *, single: int, max_batch: int,
            seconds: float, progress: Progress, desc: str) -> Speed:
    """Time ``predict`` on ``single`` rows (latency) and on ``max_batch`` rows (throughput)."""
    one = sample_inputs(data, single)
    many = sample_inputs(data, max_batch)
    latencies = _timed_calls(predict, one, seconds, progress, f"{desc} latency")
    batch_times = _timed_calls(predict, many, seconds, progress, f"{desc} throughput")
    return Speed(
        latency_p50_ms=round(float(np.percentile(latencies, 50)) * 1e3, 4),
        latency_p99_ms=round(float(np.percentile(latencies, 99)) * 1e3, 4),
        throughput_rows_s=round(max_batch / float(np.median(batch_times)), 1),
        max_batch=max_batch, latency_samples=len(latencies),
    )


def _timed_calls(predict: Predict, inputs: Inputs, seconds: float, progress: Progress,
                 desc: str) -> list[float]:
    for _ in range(WARMUP):
        predict(inputs)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    for _ in progress.bar(range(MAX_CALLS), desc):
        start = time.perf_counter()
        predict(inputs)
        times.append(time.perf_counter() - start)
        if len(times) >= MIN_CALLS and start >= deadline:
            break
    return times


def size_on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
