"""What every front end says about a model version: its metadata, parameters and Triton-style
configuration, as plain dicts. REST serialises them to JSON, gRPC copies them into messages, so
the two cannot describe a model differently. Protocol-free."""

from __future__ import annotations

from typing import Any

from appliance.errors import ModelNotFound, ModelNotReady
from appliance.repository import ModelVersion, Repository

#: Protocol datatype → Triton's model-config ``data_type`` where the names differ.
TRITON_TYPES = {"BOOL": "TYPE_BOOL", "BYTES": "TYPE_STRING"}


def addressed_version(repository: Repository, name: str, version: str | None) -> ModelVersion | None:
    """The version metadata describes, ready or not: the one named, else the newest ready one,
    else the newest. Raises ModelNotFound for an unknown model or version."""
    entry = repository.entry(name)
    if version is None:
        latest = entry.latest_ready()
        if latest is None and entry.versions:
            latest = entry.versions[max(entry.versions)]
        return latest
    if not version.isdigit() or int(version) not in entry.versions:
        raise ModelNotFound(f"model '{name}' has no version '{version}'")
    return entry.versions[int(version)]


def model_metadata(repository: Repository, name: str, version: str | None) -> dict[str, Any]:
    """The protocol's model metadata document (name, versions, platform, inputs, outputs, parameters)."""
    target = addressed_version(repository, name, version)
    entry = repository.entry(name)
    doc: dict[str, Any] = {"name": name, "versions": [str(v) for v in sorted(entry.versions)]}
    if target is None:
        raise ModelNotReady(f"model '{name}' has no loaded version: {entry.error or 'none selected'}")
    doc["platform"] = platform(target)
    doc["inputs"], doc["outputs"] = tensor_metadata(target)
    doc["parameters"] = version_parameters(target)
    return doc


def platform(target: ModelVersion) -> str:
    if target.manifest is None:
        return ""
    return "openvino_ir" if target.manifest.format == "openvino" else "onnxruntime_onnx"


def tensor_metadata(target: ModelVersion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs as ``{"name", "datatype", "shape"}`` (-1 for the batch dimension)."""
    config = target.config
    batched = config.max_batch_size > 0
    if target.compiled is None:
        return ([s.to_metadata(batched) for s in config.inputs], [s.to_metadata(batched) for s in config.outputs])
    declared = {s.name: s for s in (*config.inputs, *config.outputs)}

    def describe(port: Any) -> dict[str, Any]:
        spec = declared.get(port.name)
        if spec is not None:
            return spec.to_metadata(batched)
        return {"name": port.name, "datatype": port.datatype, "shape": list(port.shape)}

    return [describe(p) for p in target.compiled.inputs], [describe(p) for p in target.compiled.outputs]


def version_parameters(target: ModelVersion) -> dict[str, Any]:
    compiled, manifest, processing = target.compiled, target.manifest, target.processing
    return {
        "version": str(target.version),
        "state": str(target.state),
        "reason": target.reason,
        "runtime": compiled.runtime if compiled else "",
        "device": compiled.device if compiled else "",
        "precision": manifest.precision if manifest else "",
        "format": manifest.format if manifest else "",
        "max_batch_size": target.config.max_batch_size,
        "labels": list(processing.labels if processing is not None else target.config.labels),
        "serve": target.serve,
        # What a request may send instead of the model's tensors: a BYTES input of strings or image files.
        "processing": {"kind": processing.kind, "input": processing.public_input, "datatype": "BYTES"}
        if processing is not None and processing.step is not None else None,
    }


def triton_config(repository: Repository, name: str, version: str | None) -> dict[str, Any]:
    """Triton's model configuration (what perf_analyzer and Triton's clients read)."""
    target = addressed_version(repository, name, version)
    if target is None:
        raise ModelNotReady(f"model '{name}' has no loaded version")
    inputs, outputs = tensor_metadata(target)
    batched = target.config.max_batch_size > 0

    def triton(t: dict[str, Any]) -> dict[str, Any]:
        dims = t["shape"][1:] if batched else t["shape"]
        return {"name": t["name"], "data_type": TRITON_TYPES.get(t["datatype"], "TYPE_" + t["datatype"]),
                "dims": dims}

    doc = {"name": name, "platform": platform(target), "backend": target.compiled.runtime if target.compiled else "",
           "max_batch_size": target.config.max_batch_size, "input": [triton(t) for t in inputs],
           "output": [triton(t) for t in outputs]}
    if batched:
        doc["dynamic_batching"] = {"preferred_batch_size": list(target.config.preferred_batch_size)}
    return doc
