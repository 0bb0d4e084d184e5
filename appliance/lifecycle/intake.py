"""Bring your own model: describe an ONNX file or an OpenVINO IR and publish it as a version.

The model is opened with the runtime that will serve it; its inputs and outputs become
``model.toml`` (written only for a new model): a leading dimension that is dynamic is the batch
dimension (``max_batch_size`` 64, dynamic batching on), other dynamic dimensions stay ``-1``.
The version is written to a staging folder beside the others with a manifest (every file's
SHA-256, the source's hash, who added it and when, the parent version) and published by one
atomic rename. A model that cannot be opened or described is refused before anything is written.
"""

from __future__ import annotations

import getpass
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrepo import Manifest, list_versions, publish_version, sha256_file, staging_directory

DEFAULT_MAX_BATCH = 64
_ORT_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
              "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
              "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
              "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL", "tensor(string)": "BYTES"}
_OV_TYPES = {"f32": "FP32", "f16": "FP16", "f64": "FP64", "i8": "INT8", "i16": "INT16", "i32": "INT32",
             "i64": "INT64", "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64", "boolean": "BOOL",
             "string": "BYTES"}


class IntakeError(ValueError):
    """The source cannot be served as it is; the message is the one line the operator sees."""


@dataclass(frozen=True)
class Port:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension


@dataclass(frozen=True)
class Described:
    format: str  # "onnx" | "openvino"
    files: tuple[Path, ...]  # what the version folder will hold (model file first)
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @property
    def batched(self) -> bool:
        return all(p.shape and p.shape[0] == -1 for p in (*self.inputs, *self.outputs))


def describe(source: Path) -> Described:
    """Open ``source`` with its runtime and read its tensors; IntakeError when it cannot be served."""
    if source.suffix == ".onnx" and source.is_file():
        return _describe_onnx(source)
    if source.suffix == ".xml" and source.is_file():
        return _describe_openvino(source)
    raise IntakeError(f"{source}: not an ONNX file (.onnx) or an OpenVINO IR (.xml beside its .bin)")


def _describe_onnx(source: Path) -> Described:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises several unrelated types for a bad model
        raise IntakeError(f"{source}: ONNX Runtime cannot open it: {exc}") from None

    def port(arg: Any) -> Port:
        kind = _ORT_TYPES.get(arg.type)
        if kind is None:
            raise IntakeError(f"{source}: tensor '{arg.name}' has type {arg.type}, "
                              "which the Open Inference Protocol cannot carry")
        return Port(arg.name, kind, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape))

    return Described("onnx", (source,), tuple(map(port, session.get_inputs())),
                     tuple(map(port, session.get_outputs())))


def _describe_openvino(source: Path) -> Described:
    import openvino as ov

    weights = source.with_suffix(".bin")
    if not weights.is_file():
        raise IntakeError(f"{source}: its weights {weights.name} are missing")
    try:
        model = ov.Core().read_model(str(source), str(weights))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the parser's message
        raise IntakeError(f"{source}: OpenVINO cannot read it: {exc}") from None

    def port(node: Any) -> Port:
        kind = _OV_TYPES.get(node.get_element_type().get_type_name())
        if kind is None or not node.get_partial_shape().rank.is_static:
            raise IntakeError(f"{source}: tensor '{node.get_any_name()}' cannot be described")
        dims = tuple(d.get_length() if d.is_static else -1 for d in node.get_partial_shape())
        return Port(node.get_any_name(), kind, dims)

    return Described("openvino", (source, weights), tuple(map(port, model.inputs)), tuple(map(port, model.outputs)))


def model_toml(described: Described, labels: list[str]) -> str:
    """A model.toml for a new model, from its tensors."""
    batched = described.batched
    lines = [f"max_batch_size = {DEFAULT_MAX_BATCH if batched else 0}"]
    if labels:
        lines.append("labels = [" + ", ".join(f'"{label}"' for label in labels) + "]")
    for kind, ports in (("input", described.inputs), ("output", described.outputs)):
        for port in ports:
            dims = port.shape[1:] if batched else port.shape
            lines += ["", f"[[{kind}]]", f'name = "{port.name}"', f'datatype = "{port.datatype}"',
                      f"dims = [{', '.join(map(str, dims))}]"]
    return "\n".join(lines) + "\n"


def add_model(source: Path, repository: Path, name: str, version: int | None = None,
              labels: list[str] | None = None, *, companions: tuple[Path, ...] = (),
              manifest_extra: dict[str, Any] | None = None, origin: Path | None = None,
              origin_sha256: str | None = None) -> Path:
    """Publish ``source`` as ``<repository>/<name>/<version>`` (next free version by default).

    ``companions``: files the version carries beside the model (a tokenizer); ``manifest_extra``:
    top-level manifest keys (``preprocessing``); ``origin``: what the operator named when
    ``source`` was made from it (a Hugging Face folder exported to ONNX), with its hash."""
    if not name or name.startswith(".") or "/" in name:
        raise IntakeError(f"'{name}' is not a valid model name")
    described = describe(source)
    model_dir = repository / name
    existing = list_versions(model_dir)
    if version is not None and version in existing:
        raise IntakeError(f"{name}/{version} already exists")
    new_model = not (model_dir / "model.toml").exists()
    with staging_directory(model_dir) as staging:
        for path in (*described.files, *companions):
            shutil.copy2(path, staging / path.name)
        provenance = {"source": str(origin or source),
                      "source_sha256": origin_sha256 or sha256_file(described.files[0]),
                      "added_by": getpass.getuser(), "tool": "appliance models add"}
        if origin is not None:
            provenance["exported_to"] = described.format
        Manifest.for_directory(
            staging, format=described.format, precision="fp32", model_file=described.files[0].name,
            parent_version=existing[-1] if existing else None, provenance=provenance, extra=dict(manifest_extra or {}),
        ).write(staging)
        toml = model_dir / "model.toml"
        if new_model:
            toml.write_text(model_toml(described, labels or []))
        try:
            return publish_version(model_dir, staging, version)
        except BaseException:
            if new_model:
                toml.unlink(missing_ok=True)
            raise
