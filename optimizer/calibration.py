"""Calibration and evaluation data: ``.npz`` files holding one array per model input.

Checked against the model before any work starts, because a mismatch discovered inside NNCF or
ONNX Runtime surfaces as a stack trace about some internal tensor, not about the user's file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo import sha256_file
from optimizer.errors import OptimizerError
from optimizer.specs import TensorSpec

LABELS = "labels"


@dataclass(frozen=True)
class TensorData:
    """Validated rows: ``inputs[name]`` has ``rows`` along axis 0; ``labels`` optional."""

    path: Path
    sha256: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    rows: int

    def batches(self, size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches of at most ``size`` rows (the last may be short), up to ``limit`` rows."""
        end = self.rows if limit is None else min(limit, self.rows)
        for start in range(0, end, size):
            stop = min(start + size, end)
            yield {name: array[start:stop] for name, array in self.inputs.items()}

    def sample(self, rows: int, seed: int) -> TensorData:
        """``rows`` rows drawn without replacement by a seeded generator, in file order: calibration
        sees the whole file's spread (not its first rows) and a rerun sees the same rows."""
        if rows >= self.rows:
            return self
        picked = np.sort(np.random.default_rng(seed).choice(self.rows, size=rows, replace=False))
        labels = None if self.labels is None else self.labels[picked]
        return TensorData(self.path, self.sha256, {k: v[picked] for k, v in self.inputs.items()}, labels, rows)

    def head(self, rows: int) -> TensorData:
        """The first ``rows`` rows (ranking on a subset is cheaper than on everything)."""
        rows = min(rows, self.rows)
        labels = None if self.labels is None else self.labels[:rows]
        return TensorData(self.path, self.sha256, {k: v[:rows] for k, v in self.inputs.items()},
                          labels, rows)


def load_data(path: Path, specs: Sequence[TensorSpec], role: str) -> TensorData:
    """Read ``path`` and check names, dtypes, shapes and emptiness against ``specs``."""
    arrays = _read_npz(path, role)
    names = {spec.name for spec in specs}
    missing = sorted(names - arrays.keys())
    if missing:
        raise OptimizerError(f"{role} data {path} lacks array(s) {', '.join(missing)}; the model's "
                             f"inputs are {', '.join(spec.describe() for spec in specs)}")
    extra = sorted(arrays.keys() - names - {LABELS})
    if extra:
        raise OptimizerError(f"{role} data {path} holds array(s) {', '.join(extra)} that are not model "
                             f"inputs ({', '.join(sorted(names))})")
    rows = {_check_array(path, role, spec, arrays[spec.name]) for spec in specs}
    if len(rows) != 1:
        raise OptimizerError(f"{role} data {path}: inputs have different row counts {sorted(rows)}")
    count = rows.pop()
    labels = arrays.get(LABELS)
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != count):
        raise OptimizerError(f"{role} data {path}: 'labels' must be one value per row "
                             f"({count}), got shape {list(labels.shape)}")
    inputs = {spec.name: arrays[spec.name] for spec in specs}
    return TensorData(path, sha256_file(path), inputs, labels, count)


def _read_npz(path: Path, role: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise OptimizerError(f"{role} data {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise OptimizerError(f"{role} data {path} is not a readable .npz file ({exc})") from None


def _check_array(path: Path, role: str, spec: TensorSpec, array: np.ndarray) -> int:
    """Return the row count of one input array after checking it fits ``spec``."""
    where = f"{role} data {path}: array {spec.name!r}"
    if array.dtype != spec.dtype:
        raise OptimizerError(f"{where} is {array.dtype.name} but the model expects {spec.dtype.name}")
    if array.ndim != len(spec.shape):
        raise OptimizerError(f"{where} has shape {list(array.shape)} but the model expects "
                             f"{spec.describe()}")
    for axis, (want, have) in enumerate(zip(spec.shape[1:], array.shape[1:], strict=True), start=1):
        if want is not None and want != have:
            raise OptimizerError(f"{where} has {have} along axis {axis}; the model expects "
                                 f"{spec.describe()}")
    if array.shape[0] == 0:
        raise OptimizerError(f"{where} is empty (0 rows)")
    batch = spec.batch_dim
    if batch is not None and array.shape[0] % batch:
        raise OptimizerError(f"{where} has {array.shape[0]} rows, not a multiple of the model's fixed "
                             f"batch size {batch}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise OptimizerError(f"{where} contains NaN or infinite values")
    return int(array.shape[0])
