"""Load what the user hands in: an ONNX file, a repository version folder or a Hugging Face folder.

Every source becomes one FP32 ONNX working copy (nodes named, so float fallbacks can name them)
plus the tensor specs the calibration data must match. A source that lives inside a repository
(``<repo>/<name>/<version>/model.onnx``) also tells us its repository, name and parent version.
A Hugging Face folder is exported first (:mod:`optimizer.hf`, the optional ``hf`` extra) and keeps
its tokenizer settings, so calibration and eval data may be plain text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modelrepo import MANIFEST_NAME, ManifestError, read_manifest, sha256_file
from optimizer.errors import OptimizerError
from optimizer.hf import TextModel, is_hf_folder
from optimizer.specs import ONNX_TYPES, TensorSpec

#: Operator domains the runtimes implement without extensions.
_KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_EXTERNAL_DATA_BYTES = 1_500_000_000


@dataclass(frozen=True)
class Source:
    """An FP32 model ready to optimize."""

    path: Path                 # what the user named
    kind: str                  # "onnx" or "hf" (a Hugging Face folder, exported to ONNX here)
    onnx_path: Path            # the FP32 working copy every optimizer step starts from
    sha256: str                # hash of the user's file (or folder) for provenance
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    repository: Path | None = None   # set when the source is a version inside a repository
    model_name: str | None = None
    version: int | None = None
    text: TextModel | None = None    # set for text models: how sentences become input arrays
    #: Nodes known to lose accuracy under static INT8, tried in float before anything else.
    sensitive_nodes: tuple[str, ...] = ()


def load_source(path: Path, workdir: Path, *, max_seq_length: int | None = None) -> Source:
    """Validate ``path`` and write the working copy under ``workdir``; raise OptimizerError if unusable."""
    if not path.exists():
        raise OptimizerError(f"source {path} does not exist")
    if is_hf_folder(path) and not (path / MANIFEST_NAME).exists():
        return _load_hf(path, workdir, max_seq_length)
    if max_seq_length is not None:
        raise OptimizerError("--max-seq-length applies to Hugging Face model folders only")
    model_file, location = _locate_onnx(path)
    return _load_onnx(path, model_file, workdir, location)


def _load_hf(folder: Path, workdir: Path, max_seq_length: int | None) -> Source:
    from optimizer.hf import down_projections, export_onnx, read_text_model

    text = read_text_model(folder, max_seq_length)
    workdir.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(folder, workdir, text)
    source = _load_onnx(folder, exported, workdir, None)
    return replace(source, kind="hf", sha256=sha256_tree(folder), text=text,
                   sensitive_nodes=down_projections(source.onnx_path))


def sha256_tree(folder: Path) -> str:
    """One hash over every file of a folder (relative names and contents), for provenance."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _locate_onnx(path: Path) -> tuple[Path, tuple[Path, str, int] | None]:
    """The ONNX file to read, and (repository, name, version) when it sits in a version folder."""
    version_dir = path if path.is_dir() else path.parent
    location = None
    if version_dir.name.isdigit() and (version_dir / MANIFEST_NAME).is_file():
        location = (version_dir.parent.parent, version_dir.parent.name, int(version_dir.name))
    if path.is_file():
        return path, location
    if location is None:
        raise OptimizerError(f"source {path} is a folder but neither a repository version "
                             "(no manifest.json) nor a Hugging Face model (no config.json)")
    try:
        manifest = read_manifest(version_dir)
    except ManifestError as exc:
        raise OptimizerError(f"source {path}: {exc}") from None
    if manifest.format != "onnx":
        raise OptimizerError(f"source {path} holds a {manifest.format} artifact; "
                             "the optimizer starts from an FP32 ONNX model")
    return version_dir / manifest.model_file, location


def _load_onnx(origin: Path, model_file: Path, workdir: Path,
               location: tuple[Path, str, int] | None) -> Source:
    import onnx

    try:
        model = onnx.load(str(model_file))
    except Exception as exc:  # protobuf raises several unrelated types for garbage bytes
        raise OptimizerError(f"source {model_file} is not a readable ONNX model "
                             f"({type(exc).__name__})") from None
    if not model.graph.node or not model.graph.input:
        raise OptimizerError(f"source {model_file} is not an ONNX model (empty graph)")
    check_operators(model, model_file)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise OptimizerError(f"source {model_file} is not a valid ONNX model: {_first_line(exc)}") from None
    _name_nodes(model)
    working = workdir / "source.onnx"
    workdir.mkdir(parents=True, exist_ok=True)
    external = model.ByteSize() > _EXTERNAL_DATA_BYTES
    onnx.save_model(model, str(working), save_as_external_data=external)
    repository, name, version = location if location else (None, None, None)
    return Source(
        path=origin, kind="onnx", onnx_path=working, sha256=sha256_file(model_file),
        inputs=tuple(_specs(model.graph.input, model)), outputs=tuple(_specs(model.graph.output, model)),
        repository=repository, model_name=name, version=version,
    )


def check_operators(model: object, where: Path) -> None:
    """Refuse operators no runtime here implements, naming the first one (clearer than a runtime trace)."""
    import onnx.defs

    for node in model.graph.node:  # type: ignore[attr-defined]
        domain = node.domain or ""
        known = domain in _KNOWN_DOMAINS and (
            domain == "com.microsoft" or onnx.defs.has(node.op_type, domain)
        )
        if not known:
            label = f"{domain}::{node.op_type}" if domain else node.op_type
            raise OptimizerError(f"source {where} uses unsupported operator {label} "
                                 f"(node {node.name or '?'!r})")


def _specs(values: object, model: object) -> list[TensorSpec]:
    initializers = {init.name for init in model.graph.initializer}  # type: ignore[attr-defined]
    specs = []
    for value in values:  # type: ignore[attr-defined]
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if tensor.elem_type not in ONNX_TYPES:
            raise OptimizerError(f"tensor {value.name!r} has an element type the optimizer does not handle")
        dtype, datatype = ONNX_TYPES[tensor.elem_type]
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, np.dtype(dtype), datatype, shape))
    return specs


def _name_nodes(model: object) -> None:
    """Give every node a unique name: fallbacks and the manifest refer to nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):  # type: ignore[attr-defined]
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
