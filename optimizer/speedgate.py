"""The speed gate: is an accurate artifact worth serving on this host?

Each candidate that passed the accuracy gate is compared, on the run's objective, with the best FP32
way this host runs the source (ONNX Runtime, OpenVINO default, OpenVINO f32). It is served only if
it beats that by ``min_speedup``; otherwise it is published with ``"serve": false`` (the version
policy skips it; a request naming it still reaches it) unless ``--allow-slower``.

Hysteresis: a measured ratio carries the benchmark's noise (the spread of its rounds, never less
than NOISE_FLOOR). The gate always takes the conservative side of that band: it serves only when
``ratio ≥ min_speedup × (1 + noise)``. A figure near the margin therefore lands in the band and is
held on every run, instead of flipping with each run's luck. A pruned artifact must clear the same
rule against its unpruned twin, or it is not published at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    timed = policy.objective != "size"
    band = max(noise(policy.objective, row) + noise(policy.objective, baseline), NOISE_FLOOR if timed else 0.0)
    ratio = value(policy.objective, row) / max(value(policy.objective, baseline), 1e-300)
    return ratio, band, policy.min_speedup * (1.0 + band)


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
