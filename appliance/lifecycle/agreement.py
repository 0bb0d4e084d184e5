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
        a = first.reshape(first.shape[0], -1) if first.ndim else first.reshape(1, 1)
        b = second.reshape(a.shape)
        cosine = _cosine(a, b)
        agreed = (a.argmax(1) == b.argmax(1)) if _probabilities(a) else cosine >= COSINE
        return Comparison(len(a), int(agreed.sum()), float(cosine.sum()), float(np.abs(a - b).max(initial=0.0)))
    return Comparison(0, 0, 0.0, 0.0)


def _probabilities(a: np.ndarray) -> bool:
    return a.shape[1] > 1 and float(a.min()) >= 0 and float(np.abs(a.sum(1) - 1.0).max()) <= 1e-3


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64 (float32 sums over long embeddings drift); a row that
    is zero in both answers counts as identical, zero in one only as orthogonal."""
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    dots = np.einsum("ij,ij->i", a64, b64)
    norms = np.sqrt(np.einsum("ij,ij->i", a64, a64) * np.einsum("ij,ij->i", b64, b64))
    zero = norms == 0
    if not zero.any():
        return dots / norms
    both_zero = zero & ~(a64.any(1) | b64.any(1))
    return np.where(zero, both_zero.astype(np.float64), dots / np.where(zero, 1.0, norms))
