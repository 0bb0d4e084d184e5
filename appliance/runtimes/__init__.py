"""Runtime backends (OpenVINO, ONNX Runtime) behind one interface; see ``base``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.runtimes.base import CompiledModel, Completion, PortInfo, RuntimeLoadError, Tensors

__all__ = ["CompiledModel", "Completion", "PortInfo", "RuntimeLoadError", "Tensors", "load_model"]


def choose_runtime(requested: str, artifact_format: str) -> str:
    """``auto``: OpenVINO runs its own IR, ONNX Runtime runs ONNX files."""
    if requested != "auto":
        if requested == "onnxruntime" and artifact_format == "openvino":
            raise RuntimeLoadError("ONNX Runtime cannot run an OpenVINO IR; use runtime = 'openvino'")
        return requested
    return "openvino" if artifact_format == "openvino" else "onnxruntime"


def load_model(model_path: Path, *, artifact_format: str, precision: str, runtime: str, device: str,
               performance_hint: str = "THROUGHPUT", nireq: int = 0, threads: int = 0,
               cache_dir: Path | None = None, model_bytes: bytes | None = None,
               weights: bytes | None = None, extra_config: dict[str, Any] | None = None) -> CompiledModel:
    """Compile one artifact with the chosen runtime (imported only here: they are heavy)."""
    chosen = choose_runtime(runtime, artifact_format)
    if chosen == "openvino":
        from appliance.runtimes.openvino import load_openvino

        return load_openvino(model_path, device=device, precision=precision,
                             performance_hint=performance_hint, nireq=nireq, cache_dir=cache_dir,
                             threads=threads, weights=weights, model_bytes=model_bytes,
                             extra_config=extra_config)
    from appliance.runtimes.onnxruntime import load_onnxruntime

    return load_onnxruntime(model_path, device=device, nireq=nireq, threads=threads,
                            model_bytes=model_bytes)
