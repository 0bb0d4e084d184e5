"""Triton's classification extension: an output asked for with ``"parameters": {"classification": K}``
is answered as the top K classes of each row, as BYTES ``"score:index:label"`` (``"score:index"``
when the version has no labels), best first.

Applied after the cache and the batcher, per request: the cached answer stays the raw scores, so
requests asking for different K share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.errors import InvalidInput


def classify(scores: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """``[..., classes]`` scores → ``[..., min(k, classes)]`` BYTES; ties keep the lower index first."""
    if scores.ndim == 0 or scores.dtype.kind not in "fiub":
        raise InvalidInput(f"classification needs a numeric output with classes on its last axis, "
                           f"not {scores.dtype} {list(scores.shape)}")
    classes = scores.shape[-1]
    k = min(k, classes)
    flat = scores.reshape(-1, classes)
    order = np.argsort(-flat.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=np.object_)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            score = float(flat[row, index])
            label = labels[index] if index < len(labels) else ""
            out[row, column] = (f"{score:f}:{index}:{label}" if label else f"{score:f}:{index}").encode()
    return out.reshape(*scores.shape[:-1], k)
