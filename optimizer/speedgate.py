"""The speed gate: is an accurate artifact worth serving on this host?

Each candidate that passed the accuracy gate is compared, on the run's objective, with the best FP32
way this host runs the source (ONNX Runtime, OpenVINO default, OpenVINO f32). It is served only if
it beats that by ``min_speedup``; otherwise it is published with ``"serve": false`` (the version
policy skips it; a request naming it still reaches it) unless ``--allow-slower``.

Hysteresis: a measured ratio carries the benchmark's noise. Models are timed in interleaved rounds,
so the ratio is taken round by round (a burst of load from a neighbour slows both sides of one
round alike and cancels out); the ratio is the median of the rounds' ratios and the noise their
half-IQR, never less than NOISE_FLOOR. The gate always takes the conservative side of that band:
it serves only when ``ratio ≥ min_speedup × (1 + noise)``. A figure near the margin therefore lands in the band and is
held on every run, instead of flipping with each run's luck. A pruned artifact must clear the same
rule against its unpruned twin, or it is not published at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.benchmark import spread
from optimizer.report import Row

OBJECTIVES = ("latency", "throughput", "size")
#: Smallest noise band assumed for a timed figure: two rounds agreeing by luck is not precision.
NOISE_FLOOR = 0.03
_FIGURES = {"latency": "batch-1 p50 latency", "throughput": "serving-batch throughput", "size": "size on disk"}


@dataclass(frozen=True)
class SpeedPolicy:
    objective: str = "latency"
    min_speedup: float = 1.1
    allow_slower: bool = False


def value(objective: str, row: Row) -> float:
    """The row's figure for ``objective``, higher is better (inverse latency and size)."""
    if objective == "size":
        return 1.0 / max(row.size_bytes, 1)
    if row.speed is None:
        return 0.0
    if objective == "latency":
        return 1.0 / row.speed.latency_p50_ms
    return row.speed.throughput_rows_s


def noise(objective: str, row: Row) -> float:
    if objective == "size" or row.speed is None:
        return 0.0
    return row.speed.latency_spread if objective == "latency" else row.speed.throughput_spread


def best_baseline(objective: str, rows: list[Row]) -> Row:
    baselines = [row for row in rows if row.status == "baseline"]
    return max(baselines, key=lambda row: value(objective, row))


def apply(rows: list[Row], policy: SpeedPolicy) -> None:
    """Set ``serve``, ``decision`` and ``speed_gate`` on every published row; drop pruned losers."""
    _settle_pruned(rows, policy)
    baseline = best_baseline(policy.objective, rows)
    for row in rows:
        if row.status != "published":
            continue
        ratio, band, required = _compare(policy, row, baseline)
        faster = ratio >= required
        row.serve = faster or policy.allow_slower
        row.decision = _reason(policy, baseline, ratio, band, required, faster)
        row.speed_gate = {
            "objective": policy.objective, "figure": _FIGURES[policy.objective],
            "baseline": baseline.artifact, "min_speedup": policy.min_speedup, "noise": round(band, 4),
            "required": round(required, 4), "ratio": round(ratio, 4), "faster": faster,
            "allow_slower": policy.allow_slower, "serve": row.serve, "reason": row.decision,
            "baselines": {r.artifact: _figures(r) for r in rows if r.status == "baseline"},
            "candidate": _figures(row),
        }


def _compare(policy: SpeedPolicy, row: Row, baseline: Row) -> tuple[float, float, float]:
    """(ratio, noise band, ratio required to pass) of ``row`` against ``baseline``."""
    if policy.objective == "size":
        ratio, band = value("size", row) / value("size", baseline), 0.0
    else:
        ratio, band = _timed_ratio(policy.objective, row, baseline)
        band = max(band, NOISE_FLOOR)
    return ratio, band, policy.min_speedup * (1.0 + band)


def _timed_ratio(objective: str, row: Row, baseline: Row) -> tuple[float, float]:
    """Median and relative half-IQR of the per-round ratios; figures measured apart (no shared
    rounds) fall back to the ratio of medians with both spreads added."""
    mine, theirs = row.speed, baseline.speed
    if mine is None or theirs is None:
        return 0.0, 0.0
    if objective == "latency":
        pairs = list(zip(theirs.round_latency_ms, mine.round_latency_ms, strict=False))
    else:
        pairs = list(zip(mine.round_throughput, theirs.round_throughput, strict=False))
    rounds = len(mine.round_latency_ms)
    if rounds > 1 and rounds == len(theirs.round_latency_ms):
        ratios = np.array([top / max(bottom, 1e-12) for top, bottom in pairs])
        return float(np.median(ratios)), spread(ratios)
    ratio = value(objective, row) / max(value(objective, baseline), 1e-300)
    return ratio, noise(objective, row) + noise(objective, baseline)


def _settle_pruned(rows: list[Row], policy: SpeedPolicy) -> None:
    """Keep a pruned artifact only if it beats its unpruned twin by the margin; else drop it."""
    for pruned in [r for r in rows if r.status == "published" and r.sparsity is not None]:
        twin = next((r for r in rows if r.status == "published" and r.sparsity is None
                     and r.format == pruned.format and r.precision == pruned.precision), None)
        if twin is None:
            continue
        ratio, _band, required = _compare(policy, pruned, twin)
        verdict = f"{ratio:.2f}x {twin.artifact} on {_FIGURES[policy.objective]} (needs {required:.2f})"
        if ratio >= required:
            twin.status, twin.note = "superseded", f"the pruned artifact beats it: {verdict}"
        else:
            pruned.status = "refused"
            pruned.note = f"pruning does not pay here: {verdict}; not published"


def _reason(policy: SpeedPolicy, baseline: Row, ratio: float, band: float, required: float,
            faster: bool) -> str:
    against = (f"{ratio:.2f}x {baseline.artifact} (the best FP32 baseline) on {_FIGURES[policy.objective]}; "
               f"needs {required:.2f} = {policy.min_speedup:g} x (1 + noise {band:.0%})")
    if faster:
        return f"served: {against}"
    if policy.allow_slower:
        return f"served (--allow-slower): {against}"
    return f"held, serve=false: {against}; the FP32 way stays the faster one to serve"


def _figures(row: Row) -> dict[str, Any]:
    speed = row.speed
    return {"latency_p50_ms": speed.latency_p50_ms if speed else None,
            "throughput_rows_s": speed.throughput_rows_s if speed else None,
            "size_bytes": row.size_bytes}
