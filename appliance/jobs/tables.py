"""The Arrow tables a job writes: predictions (one column per model output) and rejects.

Outputs keep the runtime's values bit for bit: a vector output becomes a fixed-size list column
over the same float32 buffer (no conversion), a scalar output a plain column. ``top_k`` adds the
labels (from ``model.toml``, else class indexes) of the k highest scores of the first classifier
output (2-D float).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

REJECTS_SCHEMA = pa.schema([("row_id", pa.int64()), ("reason", pa.string())])


def output_table(row_ids: np.ndarray, outputs: dict[str, np.ndarray], model: str, version: str,
                 labels: Sequence[str], top_k: int) -> pa.Table:
    columns: dict[str, pa.Array] = {"row_id": pa.array(row_ids, type=pa.int64())}
    for name, array in outputs.items():
        columns[name] = _column(array)
    if top_k and outputs:
        scores = next((a for a in outputs.values() if a.ndim == 2 and a.dtype.kind == "f"), None)
        if scores is not None:
            columns["top_k_labels"] = _top_k(scores, labels, top_k)
    rows = len(row_ids)
    columns["model"] = _constant(model, rows)
    columns["model_version"] = _constant(version, rows)
    return pa.table(columns)


def rejects_table(rejects: list[tuple[int, str]]) -> pa.Table | None:
    if not rejects:
        return None
    ids, reasons = zip(*rejects, strict=True)
    return pa.table([pa.array(ids, type=pa.int64()), pa.array(reasons, type=pa.string())], schema=REJECTS_SCHEMA)


def _column(array: np.ndarray) -> pa.Array:
    array = np.ascontiguousarray(array)
    if array.ndim <= 1:
        return pa.array(array)
    width = int(np.prod(array.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), width)


def _top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> pa.Array:
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = np.asarray(list(labels) if len(labels) >= scores.shape[1] else
                       [str(i) for i in range(scores.shape[1])], dtype=object)
    return pa.FixedSizeListArray.from_arrays(pa.array(names[order].reshape(-1), type=pa.string()), k)


def _constant(value: str, rows: int) -> pa.Array:
    """A repeated string as a dictionary column: one value stored, not ``rows`` copies."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value]))
