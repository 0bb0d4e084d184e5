"""How closely a candidate answers like the stable version, on the same inputs.

Per row: for probability-like outputs (a classifier's) the two agree when their top-1 class is the
same; otherwise (embeddings, regressions) when their cosine similarity is at least ``COSINE``. The
largest absolute difference is kept too: it is what a threshold a client applies would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COSINE = 0.99


@dataclass
class Comparison:
    rows: int
    agreed: int
    cosine_sum: float
    max_abs_diff: float


def compare(primary: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> Comparison:
    """Compare the first float output both answers share, row by row."""
    for name, first in primary.items():
        second = other.get(name)
        if second is None or first.shape != second.shape or first.dtype.kind != "f":
            continue
        a = first.reshape(first.shape[0], -1).astype(np.float64) if first.ndim else first.reshape(1, 1)
        b = second.reshape(a.shape).astype(np.float64)
        cosine = _cosine(a, b)
        agreed = (a.argmax(1) == b.argmax(1)) if _probabilities(a) else cosine >= COSINE
        return Comparison(len(a), int(agreed.sum()), float(cosine.sum()), float(np.abs(a - b).max(initial=0.0)))
    return Comparison(0, 0, 0.0, 0.0)


def _probabilities(a: np.ndarray) -> bool:
    return a.shape[1] > 1 and bool(np.all(a >= 0)) and bool(np.allclose(a.sum(1), 1.0, atol=1e-3))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.allclose(a, b), 1.0, 0.0))
