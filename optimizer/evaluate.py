"""Accuracy figures for the gate: optimized outputs against labels or against the FP32 reference.

Every metric is turned into a per-row score where higher is better, so the gate and NNCF's
accuracy control rank rows the same way. ``drop`` is in points: 100 × (reference − optimized);
for ``mse`` the reference scores 0, so the drop is 100 × MSE. Beside the metric the gate compares
the outputs themselves (mean absolute difference to the FP32 outputs, in output units): top-1
accuracy and cosine do not see probabilities rounded to steps of 1/255, a client's threshold does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.errors import OptimizerError

METRICS = ("accuracy", "top1-agreement", "cosine", "mse")
_EPS = 1e-12


def default_metric(has_labels: bool) -> str:
    return "accuracy" if has_labels else "cosine"


def check_metric(metric: str, has_labels: bool) -> None:
    if metric not in METRICS:
        raise OptimizerError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric == "accuracy" and not has_labels:
        raise OptimizerError("metric 'accuracy' needs a 'labels' array in the eval data")


def per_row(metric: str, outputs: np.ndarray, reference: np.ndarray,
            labels: np.ndarray | None) -> np.ndarray:
    """One score per row, higher is better."""
    flat = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    if metric == "accuracy":
        if labels is None:
            raise OptimizerError("metric 'accuracy' needs a 'labels' array in the eval data")
        return (flat.argmax(axis=1) == labels.reshape(-1)).astype(np.float64)
    if metric == "top1-agreement":
        return (flat.argmax(axis=1) == ref.argmax(axis=1)).astype(np.float64)
    if metric == "cosine":
        dot = (flat * ref).sum(axis=1)
        norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(ref, axis=1)
        return dot / np.maximum(norms, _EPS)
    return -((flat - ref) ** 2).mean(axis=1)


def score(metric: str, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> float:
    return float(per_row(metric, outputs, reference, labels).mean())


def output_difference(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of every output value to the FP32 reference (probability points / 100)."""
    return float(np.abs(outputs.astype(np.float64) - reference.astype(np.float64)).mean())


@dataclass(frozen=True)
class GateResult:
    """One artifact's figures against the FP32 reference."""

    metric: str
    reference: float
    optimized: float
    max_drop: float
    output_diff: float = 0.0             # mean |optimized − FP32| over every output value
    max_output_diff: float | None = None  # None: outputs not gated

    @property
    def drop(self) -> float:
        return round(100.0 * (self.reference - self.optimized), 4)

    @property
    def outputs_close(self) -> bool:
        return self.max_output_diff is None or self.output_diff <= self.max_output_diff + 1e-12

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop + 1e-9 and self.outputs_close

    def describe(self) -> str:
        text = (f"{self.metric} {_fmt(self.metric, self.optimized)} vs FP32 "
                f"{_fmt(self.metric, self.reference)} (drop {self.drop:.2f} points, limit {self.max_drop:g})")
        if self.max_output_diff is not None:
            text += f", output diff {self.output_diff:.2g} (limit {self.max_output_diff:g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "reference": round(self.reference, 6),
                "optimized": round(self.optimized, 6), "drop_points": self.drop,
                "max_drop_points": self.max_drop, "output_diff": round(self.output_diff, 8),
                "max_output_diff": self.max_output_diff, "passed": self.passed}


def _fmt(metric: str, value: float) -> str:
    return f"{-value:.3g} (mse)" if metric == "mse" else f"{value:.4f}"


def drift_baseline(inputs: dict[str, np.ndarray], outputs: np.ndarray) -> dict[str, Any]:
    """What live traffic is compared against: class mix, confidence and input statistics on EVAL."""
    first = next(iter(inputs.values())).astype(np.float64)
    baseline: dict[str, Any] = {
        "rows": int(outputs.shape[0]),
        "input_mean": round(float(first.mean()), 6),
        "input_std": round(float(first.std()), 6),
    }
    if first.ndim == 2 and first.shape[1] <= 1024:
        baseline["feature_mean"] = [round(float(v), 6) for v in first.mean(axis=0)]
        baseline["feature_std"] = [round(float(v), 6) for v in first.std(axis=0)]
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        classes = np.bincount(outputs.argmax(axis=1), minlength=outputs.shape[1])
        baseline["class_distribution"] = [round(float(c), 6) for c in classes / classes.sum()]
        baseline["confidence_mean"] = round(float(outputs.max(axis=1).mean()), 6)
    return baseline
