"""Arrow columns → the model's input tensors, with every bad row set aside and its reason kept.

A row is bad when one of its values is missing, not a number, NaN/infinite (unless the job allows
it), or when a list column holds the wrong number of values for the model's input width. Bad rows
never reach the model and are never dropped silently: the runner writes them to the rejects file
(or stops the job in strict mode).

Where a model input has a column of its own name, that column feeds it (a list column for a
vector input, a scalar column for a one-element input). A model with a single input may instead
be fed from several scalar columns, one feature each (``--input-columns``, default: every column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.dataplane.lanes import InputPlan


class FeatureError(ValueError):
    """The input cannot feed the model at all (a missing column, a column count that does not
    match the model's width): the whole job stops, no row is rejected for it."""


@dataclass(frozen=True, slots=True)
class Binding:
    """Where one model input comes from: one list/scalar column, or several scalar columns."""

    input_name: str
    columns: tuple[str, ...]
    width: int
    dtype: np.dtype
    stacked: bool  # several scalar columns, one feature each


@dataclass(slots=True)
class Converted:
    """One Arrow batch as model inputs: ``ok`` marks the rows kept (the tensors hold only those)."""

    tensors: dict[str, np.ndarray]
    ok: np.ndarray
    reasons: list[tuple[int, str]]  # (row offset within the batch, why it was rejected)


def bind_inputs(plan: dict[str, InputPlan], schema: pa.Schema, input_columns: tuple[str, ...]) -> list[Binding]:
    """Match the model's inputs to the input's columns, or raise ``FeatureError`` saying why not."""
    bindings = []
    for name, spec in plan.items():
        if spec.datatype == "BYTES" or -1 in spec.dims:
            raise FeatureError(f"input '{name}': batch jobs need a fixed-size numeric input, not "
                               f"{spec.datatype} {list(spec.dims)}")
        width = int(np.prod(spec.dims)) if spec.dims else 1
        if name in schema.names and not input_columns:
            bindings.append(Binding(name, (name,), width, spec.dtype, stacked=False))
            continue
        if len(plan) > 1:
            raise FeatureError(f"model input '{name}' has no column of that name (columns: {', '.join(schema.names)})")
        columns = input_columns or tuple(schema.names)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise FeatureError(f"no column(s) {', '.join(missing)} in the input (columns: {', '.join(schema.names)})")
        if len(columns) == 1 and _is_list(schema.field(columns[0]).type):
            bindings.append(Binding(name, columns, width, spec.dtype, stacked=False))
        elif len(columns) != width:
            raise FeatureError(f"model input '{name}' takes {width} values per row; {len(columns)} column(s) given")
        else:
            bindings.append(Binding(name, columns, width, spec.dtype, stacked=True))
    return bindings


def convert(batch: pa.RecordBatch, bindings: list[Binding], plan: dict[str, InputPlan],
            allow_nan: bool = False) -> Converted:
    """The tensors of the good rows of ``batch``, and why each other row was refused."""
    rows = batch.num_rows
    reasons = np.full(rows, "", dtype=object)
    matrices = {}
    for binding in bindings:
        if binding.stacked:
            matrix = np.empty((rows, binding.width), dtype=np.float64)
            for j, column in enumerate(binding.columns):
                matrix[:, j] = _scalar(batch.column(column), column, reasons)
        else:
            matrix = _vector(batch.column(binding.columns[0]), binding, reasons)
        if not allow_nan and matrix.dtype.kind == "f":
            bad = ~np.isfinite(matrix).all(axis=1) & (reasons == "")
            reasons[bad] = f"input '{binding.input_name}': NaN or infinite value"
        matrices[binding.input_name] = matrix
    ok = reasons == ""
    tensors = {}
    for binding in bindings:
        kept = matrices[binding.input_name][ok]
        tensors[binding.input_name] = np.ascontiguousarray(
            kept.astype(binding.dtype, copy=False).reshape((len(kept), *plan[binding.input_name].dims)))
    rejected = [(int(i), str(reasons[i])) for i in np.flatnonzero(~ok)]
    return Converted(tensors, ok, rejected)


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _scalar(column: pa.Array | pa.ChunkedArray, name: str, reasons: np.ndarray) -> np.ndarray:
    """One feature column as float64; a missing or non-numeric cell marks its row."""
    nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    _mark(reasons, nulls, f"column '{name}': missing value")
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        filled = pc.fill_null(column, 0) if nulls.any() else column
        return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)
    try:
        return np.asarray(pc.cast(pc.fill_null(column, "0") if nulls.any() else column, pa.float64())
                          .to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_each(column.to_pylist(), name, reasons)


def _parse_each(values: list[object], name: str, reasons: np.ndarray) -> np.ndarray:
    """The slow path, only for a column holding something that is not a number."""
    out = np.zeros(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            if not reasons[i]:
                reasons[i] = f"column '{name}': not a number: {str(value)[:40]!r}"
    return out


def _vector(column: pa.Array | pa.ChunkedArray, binding: Binding, reasons: np.ndarray) -> np.ndarray:
    """A list column (one list per row) as a [rows, width] matrix; wrong widths mark their rows."""
    name, width = binding.columns[0], binding.width
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if not _is_list(kind):
        if width != 1:
            raise FeatureError(f"column '{name}' holds scalars; model input '{binding.input_name}' takes {width}")
        return _scalar(column, name, reasons).reshape(-1, 1)
    fast = _whole_rows(column, width)
    if fast is not None:
        return fast
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    _mark(reasons, nulls, f"column '{name}': missing value")
    wrong = (~nulls) & (np.nan_to_num(lengths.astype(np.float64), nan=-1) != width)
    for i in np.flatnonzero(wrong & (reasons == "")):
        reasons[i] = f"column '{name}': {int(lengths[i])} values, model input '{binding.input_name}' takes {width}"
    good = ~(nulls | wrong)
    matrix = np.full((len(column), width), np.nan)
    if good.any():
        kept = column.filter(pa.array(good)) if not good.all() else column
        element_reasons = np.full(int(good.sum()) * width, "", dtype=object)
        values = _scalar(pc.list_flatten(kept), name, element_reasons).reshape(-1, width)
        matrix[good] = values
        # a missing or non-numeric element inside a list marks the row that holds it
        row_reasons = element_reasons.reshape(-1, width)
        bad_rows = (row_reasons != "").any(axis=1)
        if bad_rows.any():
            where = np.flatnonzero(good)[bad_rows]
            for i, row in zip(where, row_reasons[bad_rows], strict=True):
                reasons[i] = reasons[i] or next(r for r in row if r)
    return matrix


def _whole_rows(column: pa.Array, width: int) -> np.ndarray | None:
    """The common case without a copy per element: every row present, of the right width, numeric."""
    kind = column.type.value_type
    if column.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return None
    if pa.types.is_fixed_size_list(column.type):
        if column.type.list_size != width:
            return None
    elif pc.min_max(pc.list_value_length(column)).as_py() != {"min": width, "max": width}:
        return None
    values = pc.list_flatten(column)
    if values.null_count:
        return None
    return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(-1, width)


def _mark(reasons: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Give rows in ``mask`` a reason unless they already have one (the first reason wins)."""
    if mask.any():
        reasons[mask & (reasons == "")] = reason
