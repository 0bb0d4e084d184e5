"""Pick the device a model runs on: a GPU when the runtime reports one, else the CPU."""

from __future__ import annotations

from typing import Any


def openvino_device(requested: str, available: list[str]) -> str:
    """``auto`` → the first ``GPU*`` OpenVINO reports (Intel integrated or discrete), else CPU."""
    if requested.lower() != "auto":
        return requested.upper()
    gpus = [d for d in available if d.startswith("GPU")]
    return gpus[0] if gpus else "CPU"


def onnxruntime_providers(requested: str, available: list[str]) -> tuple[list[Any], str]:
    """Execution providers and the device label shown in metadata.

    The CPU provider is always named explicitly: ONNX Runtime lists ``AzureExecutionProvider``
    first in some builds.
    """
    wanted = requested.lower()
    if wanted in ("auto", "cuda", "gpu") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA"
    if wanted in ("cuda", "gpu"):
        raise ValueError(f"device {requested!r} requested but ONNX Runtime offers only {available}")
    return ["CPUExecutionProvider"], "CPU"
