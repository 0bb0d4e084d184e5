"""A small server-side history for the status page: cumulative counters sampled every few seconds.

A background task snapshots the request counters and the latency histogram (summed over models)
into a ring buffer; the status endpoint turns consecutive snapshots into rates and p50/p95/p99
over a trailing window of bucket deltas — the way Prometheus' ``histogram_quantile`` does it —
so the page needs no client-side bookkeeping and survives reloads.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from appliance.metrics import LATENCY_BUCKETS, Metrics, status_class

#: Intervals a percentile point looks back over (smooths light traffic).
QUANTILE_SPAN = 5
#: The ``Sample`` field each class of answer adds to (``metrics.status_class``).
_FIELD = {"ok": "ok", "server_error": "errors", "rejected": "rejected", "auth": "auth_failures",
          "client_error": "client_errors"}
#: Rate series of the page, each the share of all answers in one class.
_RATES = (("error_rate", "errors"), ("rejection_rate", "rejected"), ("client_error_rate", "client_errors"),
          ("auth_failure_rate", "auth_failures"))


@dataclass(slots=True)
class Sample:
    t: float  # wall clock, for the chart's axis
    mono: float
    ok: float = 0.0
    errors: float = 0.0  # server errors: 5xx other than the refusals below
    rejected: float = 0.0  # 429 / 503 / 504: load shedding, not ready, deadline
    client_errors: float = 0.0  # 4xx other than auth and 429
    auth_failures: float = 0.0  # 401 / 403
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    batch_sum: float = 0.0
    batch_count: float = 0.0
    queue_depth: int = 0
    in_flight: int = 0
    latency: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))
    per_version: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (ok, failed)


def quantile(q: float, bounds: tuple[float, ...], counts: list[float]) -> float | None:
    """``histogram_quantile`` over non-cumulative bucket counts (last one is +Inf)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i, count in enumerate(counts):
        if seen + count >= rank and count > 0:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _samples(metric: Any) -> list[Any]:
    """The samples of a single-family metric (``collect`` is typed as a plain iterable)."""
    return next(iter(metric.collect())).samples


def take_sample(metrics: Metrics, admission: dict[str, dict[str, Any]]) -> Sample:
    """Read the cumulative figures once (a few hundred samples at most: cheap every 2 s)."""
    sample = Sample(time.time(), time.monotonic(), queue_depth=sum(a["waiting"] for a in admission.values()),
                    in_flight=sum(a["in_flight"] for a in admission.values()))
    for s in _samples(metrics.requests):
        if not s.name.endswith("_total"):
            continue
        key = (s.labels["model"], s.labels["version"])
        row = sample.per_version.setdefault(key, [0.0, 0.0])
        field_name = _FIELD[_class_of(s.labels["status"])]
        setattr(sample, field_name, getattr(sample, field_name) + s.value)
        row[0 if field_name == "ok" else 1] += s.value
    for s in _samples(metrics.cache):
        if s.name.endswith("_total"):
            if s.labels["result"] == "hit":
                sample.cache_hits += s.value
            else:
                sample.cache_misses += s.value
    _fold_histogram(metrics, sample)
    return sample


def _class_of(status: str) -> str:
    return status_class(int(status)) if status.isdigit() else "server_error"


def _fold_histogram(metrics: Metrics, sample: Sample) -> None:
    index = {repr(float(b)): i for i, b in enumerate(LATENCY_BUCKETS)}
    cumulative: dict[tuple[str, str], list[float]] = {}
    for s in _samples(metrics.request_seconds):
        if s.name.endswith("_bucket"):
            key = (s.labels["model"], s.labels["version"])
            row = cumulative.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 1))
            row[index.get(repr(float(s.labels["le"])), len(LATENCY_BUCKETS))] = s.value
    for row in cumulative.values():
        previous = 0.0
        for i, value in enumerate(row):
            sample.latency[i] += value - previous
            previous = value
    for s in _samples(metrics.batch_size):
        if s.name.endswith("_sum"):
            sample.batch_sum += s.value
        elif s.name.endswith("_count"):
            sample.batch_count += s.value


class History:
    def __init__(self, interval_s: float = 2.0, keep_s: float = 600.0) -> None:
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=max(2, math.ceil(keep_s / interval_s)) + 1)

    def record(self, sample: Sample) -> None:
        self._samples.append(sample)

    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def series(self) -> dict[str, list[Any]]:
        """Per-interval rates and trailing-window latency percentiles (milliseconds)."""
        samples = list(self._samples)
        out: dict[str, list[Any]] = {k: [] for k in (
            "t", "rps", "p50_ms", "p95_ms", "p99_ms", *(name for name, _ in _RATES), "cache_hit_rate",
            "queue_depth", "in_flight", "batch_mean")}
        for i in range(1, len(samples)):
            prev, cur = samples[i - 1], samples[i]
            dt = max(1e-6, cur.mono - prev.mono)
            delta = {f: getattr(cur, f) - getattr(prev, f) for f in _FIELD.values()}
            total = sum(delta.values())
            hits, misses = cur.cache_hits - prev.cache_hits, cur.cache_misses - prev.cache_misses
            batches = cur.batch_count - prev.batch_count
            base = samples[max(0, i - QUANTILE_SPAN)]
            window = [c - b for c, b in zip(cur.latency, base.latency, strict=True)]
            out["t"].append(round(cur.t, 3))
            out["rps"].append(round(total / dt, 3))
            for q, name in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                value = quantile(q, LATENCY_BUCKETS, window)
                out[name].append(None if value is None else round(value * 1000, 3))
            for name, field_name in _RATES:
                out[name].append(_ratio(delta[field_name], total))
            out["cache_hit_rate"].append(_ratio(hits, hits + misses))
            out["queue_depth"].append(cur.queue_depth)
            out["in_flight"].append(cur.in_flight)
            out["batch_mean"].append(round((cur.batch_sum - prev.batch_sum) / batches, 2) if batches else None)
        return out

    def version_rates(self, span: int = QUANTILE_SPAN) -> dict[tuple[str, str], float]:
        """Requests per second of each model version over the last ``span`` intervals."""
        if len(self._samples) < 2:
            return {}
        cur, base = self._samples[-1], self._samples[max(0, len(self._samples) - 1 - span)]
        dt = max(1e-6, cur.mono - base.mono)
        return {key: round((sum(row) - sum(base.per_version.get(key, (0.0, 0.0)))) / dt, 3)
                for key, row in cur.per_version.items()}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None
