"""Prediction-quality signals for classifiers: top-1 confidence, entropy and drift per model version.

The hot path only *appends*: the service observer hands each successful outcome's class scores
(and first input) to a per-version pending list. Pending rows are folded with vectorized numpy by
the status sampler (every ``observability.status_interval_s``) and at every scrape — off the
request's latency — or inline once ``fold_rows`` rows or ``FOLD_BYTES`` of inputs have gathered,
which bounds the memory held between samples.

Drift is computed at scrape time over a sliding window of recent rows, against the baseline the
optimizer stored in the version's manifest (``metrics.baseline``: ``class_distribution``,
``input_mean``, ``input_std``). A version without a baseline still gets confidence and entropy.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from appliance.dataplane.service import InferOutcome
from appliance.repository import ModelVersion

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
ENTROPY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: PSI below this many rows in the window is noise: the gauge is not exposed until then.
PSI_MIN_ROWS = 100
_EPS = 1e-4  # floor for empty classes in the PSI sum
#: Fold inline once pending inputs hold this many bytes (large inputs, heavy traffic).
FOLD_BYTES = 32 << 20
#: Input drift is estimated from at most this many values of each request's first input, evenly
#: strided. An image's mean and spread need no more, and moments over all 150,528 values of a
#: 224×224 image (a float64 copy, then a dot product that wakes OpenBLAS's spinning threads) cost
#: ~4 % of the server's CPU on the ResNet-sized benchmark.
INPUT_SAMPLE = 4096
_FLOAT_TYPES = ("FP16", "FP32", "FP64")


@dataclass(frozen=True)
class Baseline:
    """What the optimizer measured on evaluation data (absent parts are None)."""

    classes: np.ndarray | None = None
    input_mean: float | None = None
    input_std: float | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any] | None) -> Baseline | None:
        raw = (metrics or {}).get("baseline")
        if not isinstance(raw, dict) or not raw:
            return None
        dist = raw.get("class_distribution")
        classes = None
        if isinstance(dist, list) and len(dist) > 1:
            classes = np.asarray(dist, dtype=np.float64)
            classes = classes / classes.sum() if classes.sum() > 0 else None
        mean, std = raw.get("input_mean"), raw.get("input_std")
        return cls(classes, float(mean) if isinstance(mean, int | float) else None,
                   float(std) if isinstance(std, int | float) else None)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index: Σ (a − e)·ln(a / e) over classes (0 = same mix; > 0.25 = shifted)."""
    e = np.maximum(expected, _EPS)
    a = np.maximum(actual, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass
class _Chunk:
    rows: int
    classes: np.ndarray
    in_n: int
    in_sum: float
    in_sumsq: float


@dataclass
class VersionQuality:
    """Signals for one classifier version; everything runs on the event loop (no locks)."""

    model: str
    version: str
    output: str
    baseline: Baseline | None
    labels: tuple[str, ...]
    window_rows: int
    fold_rows: int
    rows: int = 0
    confidence_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(CONFIDENCE_BUCKETS) + 1, np.int64))
    confidence_sum: float = 0.0
    entropy_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(ENTROPY_BUCKETS) + 1, np.int64))
    entropy_sum: float = 0.0
    _pending: list[np.ndarray] = field(default_factory=list)
    _pending_in: list[np.ndarray] = field(default_factory=list)
    _pending_rows: int = 0
    _pending_bytes: int = 0
    _window: deque[_Chunk] = field(default_factory=deque)
    window_total: int = 0

    def add(self, scores: np.ndarray, first_input: np.ndarray | None) -> None:
        """Hot path: remember, compute later."""
        self._pending.append(scores)
        if first_input is not None:
            sample = input_sample(first_input)
            self._pending_in.append(sample)
            self._pending_bytes += sample.nbytes
        self._pending_rows += scores.shape[0] if scores.ndim > 1 else 1
        if self._pending_rows >= self.fold_rows or self._pending_bytes >= FOLD_BYTES:
            self.fold()

    def fold(self) -> None:
        """Fold pending rows into the histograms and the drift window (vectorized)."""
        if not self._pending:
            return
        pending, pending_in = self._pending, self._pending_in
        self._pending, self._pending_in, self._pending_rows, self._pending_bytes = [], [], 0, 0
        width = pending[0].shape[-1]
        if all(p.ndim == 2 and p.shape[1] == width for p in pending):
            scores = np.concatenate(pending)
        else:
            scores = np.concatenate([p.reshape(-1, width) for p in pending if p.shape[-1] == width])
        probs = _as_probabilities(scores.astype(np.float64, copy=False))
        top1 = probs.max(axis=1)
        entropy = -np.sum(probs * np.log(np.maximum(probs, 1e-12)), axis=1) / math.log(width)
        self.confidence_counts += np.bincount(np.searchsorted(CONFIDENCE_BUCKETS, top1),
                                              minlength=len(CONFIDENCE_BUCKETS) + 1)
        self.entropy_counts += np.bincount(np.searchsorted(ENTROPY_BUCKETS, entropy),
                                           minlength=len(ENTROPY_BUCKETS) + 1)
        self.confidence_sum += float(top1.sum())
        self.entropy_sum += float(entropy.sum())
        self.rows += len(top1)
        self._slide(_Chunk(len(top1), np.bincount(probs.argmax(axis=1), minlength=width), *_input_moments(pending_in)))

    def _slide(self, chunk: _Chunk) -> None:
        self._window.append(chunk)
        self.window_total += chunk.rows
        while len(self._window) > 1 and self.window_total - self._window[0].rows >= self.window_rows:
            self.window_total -= self._window.popleft().rows

    # --- read side (scrape / status page) -----------------------------------------------------
    def class_mix(self) -> np.ndarray | None:
        if not self._window:
            return None
        width = max(len(c.classes) for c in self._window)
        counts = np.zeros(width, np.int64)
        for chunk in self._window:
            counts[: len(chunk.classes)] += chunk.classes
        return counts / counts.sum()

    def drift_psi(self) -> float | None:
        if self.baseline is None or self.baseline.classes is None or self.window_total < PSI_MIN_ROWS:
            return None
        mix = self.class_mix()
        if mix is None or len(mix) != len(self.baseline.classes):
            return None
        return psi(self.baseline.classes, mix)

    def input_stats(self) -> tuple[float, float] | None:
        n = sum(c.in_n for c in self._window)
        if n == 0:
            return None
        mean = sum(c.in_sum for c in self._window) / n
        var = max(0.0, sum(c.in_sumsq for c in self._window) / n - mean * mean)
        return mean, math.sqrt(var)

    def input_shift(self) -> float | None:
        """|live mean − baseline mean| in baseline standard deviations."""
        stats = self.input_stats()
        base = self.baseline
        if stats is None or base is None or base.input_mean is None or not base.input_std:
            return None
        return abs(stats[0] - base.input_mean) / base.input_std

    def snapshot(self) -> dict[str, Any]:
        """For the status page."""
        self.fold()
        mix = self.class_mix()
        stats = self.input_stats()
        return {
            "model": self.model, "version": self.version, "rows": self.rows,
            "window_rows": self.window_total, "has_baseline": self.baseline is not None,
            "confidence_buckets": list(CONFIDENCE_BUCKETS), "confidence_counts": self.confidence_counts.tolist(),
            "confidence_mean": self.confidence_sum / self.rows if self.rows else None,
            "entropy_mean": self.entropy_sum / self.rows if self.rows else None,
            "class_mix": mix.round(4).tolist() if mix is not None else None,
            "baseline_mix": (self.baseline.classes.round(4).tolist()
                             if self.baseline is not None and self.baseline.classes is not None else None),
            "labels": list(self.labels), "psi": _round(self.drift_psi()),
            "input_mean": _round(stats[0]) if stats else None, "input_std": _round(stats[1]) if stats else None,
            "input_shift": _round(self.input_shift()),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities pass through; anything else (logits) is soft-maxed."""
    if scores.min() >= 0.0 and float(np.abs(scores.sum(axis=1) - 1.0).max()) <= 1e-3:
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def input_sample(array: np.ndarray) -> np.ndarray:
    """At most INPUT_SAMPLE values of ``array``, evenly strided, as a small array of its own (a view
    would keep the whole request's input alive until the next fold)."""
    flat = array.reshape(-1)
    if flat.size <= INPUT_SAMPLE:
        return flat
    return flat[::-(-flat.size // INPUT_SAMPLE)].copy()


def _input_moments(samples: list[np.ndarray]) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of the finite values of the 1-D ``input_sample``s."""
    if not samples:
        return 0, 0.0, 0.0
    flat = np.concatenate(samples).astype(np.float64, copy=False)
    finite = np.isfinite(flat)
    if not finite.all():
        flat = flat[finite]
    # Not np.dot: a long enough vector makes OpenBLAS wake its worker threads, which then spin.
    return int(flat.size), float(flat.sum()), float(np.square(flat).sum())


_SKIP: Any = object()  # marks a version that is not a classifier


def classifier_output(version: ModelVersion) -> str | None:
    """The output holding class scores: with labels, the output of that width; else a single
    2-D float output."""
    compiled = version.compiled
    if compiled is None:
        return None
    outputs = [p for p in compiled.outputs if p.datatype in _FLOAT_TYPES]
    labels = version.config.labels
    if labels:
        for port in outputs:
            if port.shape and port.shape[-1] in (len(labels), -1):
                return port.name
        return None
    if len(compiled.outputs) == 1 and len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[1] != 1:
        return outputs[0].name
    return None


class QualityMonitor:
    """The service observer plus a Prometheus collector over every classifier version."""

    def __init__(self, window_rows: int = 2048, fold_rows: int = 16384) -> None:
        self.window_rows = window_rows
        self.fold_rows = fold_rows
        self._states: dict[ModelVersion, VersionQuality] = {}

    def observe(self, outcome: InferOutcome) -> None:
        """Service observer (hot path): a dict lookup and an append."""
        version = outcome.version
        state = self._states.get(version)  # type: ignore[arg-type]
        if state is None:
            if version is None:
                return
            state = self._states[version] = self._build(version)
        if state is _SKIP or outcome.outputs is None:
            return
        scores = outcome.outputs.get(state.output)
        if scores is None or scores.dtype.kind != "f":
            return
        first = outcome.request.inputs[0].data if outcome.request and outcome.request.inputs else None
        state.add(scores, first if first is not None and first.dtype.kind in "fiu" else None)

    def _build(self, version: ModelVersion) -> VersionQuality:
        output = classifier_output(version)
        if output is None:
            return _SKIP
        baseline = Baseline.from_metrics(version.manifest.metrics if version.manifest else None)
        return VersionQuality(version.name, str(version.version), output, baseline, tuple(version.config.labels),
                              self.window_rows, self.fold_rows)

    def versions(self) -> list[VersionQuality]:
        states = [s for s in self._states.values() if s is not _SKIP]
        for state in states:
            state.fold()
        return states

    def collect(self) -> Iterator[Metric]:
        """prometheus-client Collector: everything computed here, at scrape time."""
        labels = ["model", "version"]
        confidence = HistogramMetricFamily("appliance_prediction_confidence",
                                           "Top-1 class probability of each predicted row.", labels=labels)
        entropy = HistogramMetricFamily("appliance_prediction_entropy",
                                        "Entropy of each predicted row over log(classes): 0 certain, 1 uniform.",
                                        labels=labels)
        drift = GaugeMetricFamily("appliance_prediction_drift_psi",
                                  "PSI of recent predicted classes vs the optimizer's baseline.", labels=labels)
        shift = GaugeMetricFamily("appliance_input_mean_shift",
                                  "|recent input mean - baseline mean| in baseline standard deviations.",
                                  labels=labels)
        mean = GaugeMetricFamily("appliance_input_mean", "Mean of recent input values.", labels=labels)
        std = GaugeMetricFamily("appliance_input_std", "Standard deviation of recent input values.", labels=labels)
        window = GaugeMetricFamily("appliance_drift_window_rows", "Rows in the drift window.", labels=labels)
        for state in self.versions():
            key = [state.model, state.version]
            confidence.add_metric(key, _buckets(CONFIDENCE_BUCKETS, state.confidence_counts), state.confidence_sum)
            entropy.add_metric(key, _buckets(ENTROPY_BUCKETS, state.entropy_counts), state.entropy_sum)
            window.add_metric(key, state.window_total)
            _maybe(drift, key, state.drift_psi())
            _maybe(shift, key, state.input_shift())
            stats = state.input_stats()
            if stats is not None:
                mean.add_metric(key, stats[0])
                std.add_metric(key, stats[1])
        yield from (confidence, entropy, drift, shift, mean, std, window)


def _buckets(bounds: tuple[float, ...], counts: np.ndarray) -> list[tuple[str, float]]:
    cumulative = np.cumsum(counts)
    return [*((repr(b), float(c)) for b, c in zip(bounds, cumulative[:-1], strict=True)),
            ("+Inf", float(cumulative[-1]))]


def _maybe(family: GaugeMetricFamily, key: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(key, value)
