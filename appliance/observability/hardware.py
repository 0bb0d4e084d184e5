"""What the appliance runs on: CPU model, cores, memory, the instruction sets that matter for INT8
and BF16 inference, and the accelerators the runtimes can see. Read once, in a thread, at startup."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import psutil

#: /proc/cpuinfo flags worth showing, in display order, with a short reading.
INTERESTING_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (INT8)",
    "avx_vnni": "AVX-VNNI (INT8)",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX",
    "amx_int8": "AMX INT8",
    "amx_bf16": "AMX BF16",
}


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {
        "model": model,
        "logical_cores": os.cpu_count() or 0,
        "physical_cores": psutil.cpu_count(logical=False) or 0,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        "instruction_sets": [label for flag, label in INTERESTING_FLAGS.items() if flag in flags],
    }


def accelerators() -> dict[str, Any]:
    """Devices OpenVINO reports and ONNX Runtime's execution providers (both are dependencies)."""
    devices: list[dict[str, str]] = []
    try:
        import openvino as ov

        core = ov.Core()
        for name in core.available_devices:
            try:
                full = str(core.get_property(name, "FULL_DEVICE_NAME"))
            except RuntimeError:
                full = name
            devices.append({"name": name, "description": full})
    except Exception as exc:  # a broken driver must not hide the rest of the page
        devices.append({"name": "openvino", "description": f"unavailable: {exc}"})
    try:
        import onnxruntime as ort

        providers = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
    except Exception:
        providers = []
    return {"openvino_devices": devices, "onnxruntime_providers": providers,
            "gpus": [d for d in devices if d["name"].startswith(("GPU", "NPU"))]}


def describe() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_bytes": memory.total,
        **accelerators(),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
