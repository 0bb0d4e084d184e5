"""Latency at batch 1 and throughput at the serving batch, for several models measured side by side.

The protocol is fixed so a rerun on the same host reaches the same decision: a warm-up, then
``rounds`` rounds in which every model is timed in turn (the order rotates each round, so a noisy
minute on a shared CPU hits all of them), each for the same wall time. A figure is the median of
its rounds' medians; its ``spread`` (half the interquartile range of the round medians, relative
to the figure) is the noise band the speed gate allows for.
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
MIN_CALLS = 3
MAX_CALLS = 5000
ROUNDS = 5


@dataclass(frozen=True)
class Speed:
    latency_p50_ms: float
    latency_p99_ms: float
    throughput_rows_s: float
    max_batch: int
    latency_samples: int
    rounds: int = 1
    latency_spread: float = 0.0      # relative half-IQR of the rounds' median latencies
    throughput_spread: float = 0.0   # relative half-IQR of the rounds' throughputs
    round_latency_ms: tuple[float, ...] = ()   # per round, so ratios can be taken round by round
    round_throughput: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["round_latency_ms"], data["round_throughput"] = list(self.round_latency_ms), list(self.round_throughput)
        return data


def sample_inputs(inputs: dict[str, np.ndarray], rows: int) -> Inputs:
    """``rows`` rows taken from the data, tiled when the data has fewer (contiguous, for sharing)."""
    out = {}
    for name, array in inputs.items():
        reps = -(-rows // array.shape[0])
        tiled = np.concatenate([array] * reps, axis=0) if reps > 1 else array
        out[name] = np.ascontiguousarray(tiled[:rows])
    return out


@dataclass(frozen=True)
class Protocol:
    """How every model of one run is timed (recorded in the manifest)."""

    single: int        # rows per latency call (1, or the model's fixed batch)
    max_batch: int     # rows per throughput call: the serving batch
    seconds: float     # wall time per model and figure, over all rounds
    rounds: int = ROUNDS


def measure_all(predictors: dict[str, Predict], data: dict[str, np.ndarray], protocol: Protocol,
                progress: Progress) -> dict[str, Speed]:
    """Time every predictor under ``protocol``, interleaved round by round."""
    one = sample_inputs(data, protocol.single)
    many = sample_inputs(data, protocol.max_batch)
    names = list(predictors)
    for name in names:
        for inputs in (one, many):
            for _ in range(WARMUP):
                predictors[name](inputs)
    budget = protocol.seconds / protocol.rounds
    latency: dict[str, list[list[float]]] = {name: [] for name in names}
    batch: dict[str, list[list[float]]] = {name: [] for name in names}
    for index in progress.bar(range(protocol.rounds), "benchmark rounds"):
        for name in names[index % len(names):] + names[:index % len(names)]:
            latency[name].append(_timed_calls(predictors[name], one, budget))
            batch[name].append(_timed_calls(predictors[name], many, budget))
    return {name: _speed(latency[name], batch[name], protocol.max_batch) for name in names}


def measure(predict: Predict, data: dict[str, np.ndarray], *, single: int, max_batch: int,
            seconds: float, progress: Progress, desc: str = "") -> Speed:
    """One model in one round (callers that run their own rounds, e.g. ``bench/int8_vs_fp32.py``)."""
    return measure_all({desc: predict}, data, Protocol(single, max_batch, seconds, rounds=1), progress)[desc]


def _speed(latency: list[list[float]], batch: list[list[float]], max_batch: int) -> Speed:
    latency_medians = np.array([np.median(times) for times in latency])
    throughputs = np.array([max_batch / np.median(times) for times in batch])
    samples = np.concatenate([np.asarray(times) for times in latency])
    return Speed(
        latency_p50_ms=round(float(np.median(latency_medians)) * 1e3, 4),
        latency_p99_ms=round(float(np.percentile(samples, 99)) * 1e3, 4),
        throughput_rows_s=round(float(np.median(throughputs)), 1),
        max_batch=max_batch, latency_samples=int(samples.size), rounds=len(latency),
        latency_spread=spread(latency_medians), throughput_spread=spread(throughputs),
        round_latency_ms=tuple(round(float(v) * 1e3, 4) for v in latency_medians),
        round_throughput=tuple(round(float(v), 1) for v in throughputs),
    )


def spread(values: np.ndarray) -> float:
    """Half the interquartile range of the rounds, relative to their median: one round hit by a
    neighbour's burst on a shared CPU does not widen the band, a steadily noisy host does."""
    low, mid, high = np.percentile(values, [25, 50, 75])
    return round(float((high - low) / (2.0 * mid)), 4)


def _timed_calls(predict: Predict, inputs: Inputs, seconds: float) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < MAX_CALLS:
        start = time.perf_counter()
        predict(inputs)
        times.append(time.perf_counter() - start)
        if len(times) >= MIN_CALLS and start >= deadline:
            break
    return times


def size_on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
