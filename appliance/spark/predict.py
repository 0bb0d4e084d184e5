"""``predict()``: Arrow batches → the pinned version's runtime → prediction columns, per executor.

On the driver the version is resolved (explicit, or the newest whose files match its manifest)
and pinned by the SHA-256 of its ``manifest.json``. On each executor the version folder (a shared
path, or the folder shipped with ``--archives``) is checked against that hash and its manifest's
file hashes before it is compiled, once per Python worker (``_SESSIONS``), with one runtime thread
and one infer slot: Spark runs one task per core, so more threads would only oversubscribe it.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.runtimes import CompiledModel, load_model
from modelrepo import MANIFEST_NAME, list_versions, read_manifest, sha256_file, verify_files

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
           "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
_SESSIONS: dict[tuple[str, str], CompiledModel] = {}
_LOCK = threading.Lock()


class PinError(RuntimeError):
    """The version folder an executor sees is not the one the driver pinned (or fails its hashes)."""


@dataclass(frozen=True)
class PinnedVersion:
    """A version as the driver resolved it: shipped to executors inside the task closure."""

    path: str
    model: str
    version: int
    manifest_sha256: str
    runtime: str


def pin_version(repository: str | os.PathLike[str], model: str, version: int | str | None = None) -> PinnedVersion:
    """The version to run: ``version``, or the newest whose files match its manifest."""
    model_dir = Path(repository) / model
    candidates = [int(version)] if version not in (None, "") else sorted(list_versions(model_dir), reverse=True)
    for number in candidates:
        path = model_dir / str(number)
        try:
            if not verify_files(path, read_manifest(path)):
                return PinnedVersion(str(path), model, number, sha256_file(path / MANIFEST_NAME), _runtime(model_dir))
        except (OSError, ValueError):
            continue
    raise PinError(f"{model_dir}: no version {version or ''} whose files match its manifest")


def _runtime(model_dir: Path) -> str:
    """``runtime`` from model.toml, as the server would choose it (``auto`` when unset)."""
    try:
        with (model_dir / "model.toml").open("rb") as handle:
            return str(tomllib.load(handle).get("runtime", "auto"))
    except FileNotFoundError:
        return "auto"


def session(pinned: PinnedVersion, local_path: str | None = None) -> CompiledModel:
    """The compiled version for this Python worker, checked against the pin on first use."""
    path = Path(local_path or pinned.path)
    key = (str(path), pinned.manifest_sha256)
    with _LOCK:
        compiled = _SESSIONS.get(key)
        if compiled is None:
            actual = sha256_file(path / MANIFEST_NAME)
            if actual != pinned.manifest_sha256:
                raise PinError(f"{path}: manifest sha256 {actual} is not the pinned {pinned.manifest_sha256}")
            manifest = read_manifest(path)
            problems = verify_files(path, manifest)
            if problems:
                raise PinError(f"{path}: " + "; ".join(problems))
            compiled = load_model(path / manifest.model_file, artifact_format=manifest.format,
                                  precision=manifest.precision, runtime=pinned.runtime, device="CPU",
                                  performance_hint="LATENCY", nireq=1, threads=1,
                                  extra_config=manifest.optimizer.get("runtime_config") or None)
            _SESSIONS[key] = compiled
        return compiled


def score_frames(frames: Iterator[Any], pinned: PinnedVersion, input_cols: Sequence[str], keep_cols: Sequence[str],
                 batch_size: int, local_path: str | None = None) -> Iterator[Any]:
    """The ``mapInPandas`` function: each pandas frame (one Arrow batch) → kept columns + outputs."""
    import pandas as pd

    compiled = session(pinned, local_path)
    port = compiled.inputs[0]
    dtype = _DTYPES.get(port.datatype, np.float32)
    for frame in frames:
        features = _features(frame, input_cols, dtype)
        outputs = [compiled.infer({port.name: features[i:i + batch_size]}) for i in range(0, len(features), batch_size)]
        out = pd.DataFrame({c: frame[c].to_numpy() for c in keep_cols})
        for spec in compiled.outputs:
            values = np.concatenate([o[spec.name] for o in outputs]) if outputs else np.empty((0,))
            out[spec.name] = list(values.reshape(len(frame), -1)) if values.ndim > 1 else values
        yield out


def _features(frame: Any, input_cols: Sequence[str], dtype: type) -> np.ndarray:
    """One array column (a vector per row), or several scalar columns (one feature each)."""
    if len(input_cols) == 1 and frame[input_cols[0]].dtype == object:
        return np.ascontiguousarray(np.stack(frame[input_cols[0]].to_numpy()).astype(dtype, copy=False))
    return np.ascontiguousarray(frame[list(input_cols)].to_numpy(dtype=dtype))


def predict(df: Any, repository: str | os.PathLike[str], model: str, version: int | str | None = None,
            input_cols: Sequence[str] = ("input",), *, keep_cols: Sequence[str] = (), batch_size: int = 1024,
            local_path: str | None = None) -> Any:
    """``df`` with the model's outputs (one column each: arrays for vectors) beside ``keep_cols``.

    ``repository`` is read on the driver to pin the version; executors load the same folder, or
    ``local_path`` where the folder was shipped to them (``--archives digits-1.zip#digits-1``).
    """
    from pyspark.sql.types import ArrayType, StructField, StructType

    pinned = pin_version(repository, model, version)
    compiled = session(pinned)  # on the driver too: the output schema, and a check the version loads
    fields = [df.schema[c] for c in keep_cols]
    for spec in compiled.outputs:
        element = _spark_type(spec.datatype)
        vector = len(spec.shape) > 1
        fields.append(StructField(spec.name, ArrayType(element, False) if vector else element, False))
    columns, keep, size = list(input_cols), list(keep_cols), batch_size

    def score(frames: Iterator[Any]) -> Iterator[Any]:
        return score_frames(frames, pinned, columns, keep, size, local_path)

    return df.select(*dict.fromkeys([*keep, *columns])).mapInPandas(score, StructType(fields))


def _spark_type(datatype: str) -> Any:
    from pyspark.sql import types

    return {"FP32": types.FloatType(), "FP64": types.DoubleType(), "INT64": types.LongType(),
            "INT32": types.IntegerType(), "BOOL": types.BooleanType()}.get(datatype, types.FloatType())
