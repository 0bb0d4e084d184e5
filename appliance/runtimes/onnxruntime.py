"""ONNX Runtime backend: one session, run by a bounded pool of threads.

``InferenceSession.run`` releases the GIL and is thread-safe, so ``slots`` worker threads give
that many batches in flight; the CPU execution provider is named explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from appliance.runtimes.base import Completion, PortInfo, RuntimeLoadError, Tensors
from appliance.runtimes.device import onnxruntime_providers
from appliance.runtimes.workers import WorkerThreads

_ORT_TO_PROTOCOL = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _ports(args: Any) -> tuple[PortInfo, ...]:
    return tuple(
        PortInfo(a.name, _ORT_TO_PROTOCOL.get(a.type, "FP32"),
                 tuple(d if isinstance(d, int) else -1 for d in a.shape))
        for a in args
    )


def _strings_as_str(inputs: Tensors) -> Tensors:
    """BYTES tensors arrive as bytes objects; ONNX Runtime's string tensors take str."""
    if all(a.dtype.kind != "O" for a in inputs.values()):
        return inputs
    converted = dict(inputs)
    for name, array in inputs.items():
        if array.dtype.kind == "O":
            flat = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
            converted[name] = np.array(flat, dtype=np.object_).reshape(array.shape)
    return converted


class OnnxRuntimeModel:
    runtime = "onnxruntime"

    def __init__(self, session: Any, device: str, slots: int) -> None:
        self._session = session
        self.device = device
        self.slots = slots
        self.inputs = _ports(session.get_inputs())
        self.outputs = _ports(session.get_outputs())
        self._output_names = [p.name for p in self.outputs]
        self._workers = WorkerThreads(slots, "ort-run")

    def _run(self, inputs: Tensors, done: Completion) -> None:
        try:
            results = self._session.run(self._output_names, _strings_as_str(inputs))
        except Exception as exc:
            done(exc)
            return
        done(dict(zip(self._output_names, results, strict=True)))

    def start(self, inputs: Tensors, done: Completion) -> None:
        self._workers.submit(self._run, inputs, done)

    def infer(self, inputs: Tensors) -> Tensors:
        results = self._session.run(self._output_names, _strings_as_str(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._workers.shutdown()


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def intra_op_threads(total: int, slots: int) -> int:
    """The session's intra-op pool size that keeps ``slots`` concurrent runs within ``total`` threads.

    ``threads`` is the model's total, as for OpenVINO. The pool is the session's, shared by every
    run in flight, and each run's calling thread works in it too: ``slots`` callers plus
    ``size - 1`` pool threads. A pool of ``total`` per session oversubscribed the cores: a batch job
    of the 1024→1536→1536→1000 MLP on two cores (two runs in flight, plus the job's own threads)
    ran at 11.5-12.2k rows/s with a two-thread pool, 13.1-13.4k with one. An explicit size also stops
    ONNX Runtime's default of one thread per physical core pinned to it, which escapes the process's
    CPU affinity (taskset, systemd CPUAffinity=).
    """
    return max(1, total - slots + 1)


def load_onnxruntime(model_path: Path, *, device: str, nireq: int, threads: int,
                     model_bytes: bytes | None = None) -> OnnxRuntimeModel:
    import onnxruntime as ort

    providers, label = onnxruntime_providers(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    slots = max(1, nireq or 2)
    options.intra_op_num_threads = intra_op_threads(threads or _usable_cpus(), slots)
    # Idle pool threads spin-wait for the next run by default: in a server that shares its cores
    # with the event loop and the audit writer, spinning takes the CPU they need (on two cores the
    # bundled model served 3.2k req/s at 1.6 cores busy with spinning, see docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model_bytes if model_bytes is not None else str(model_path),
                                       sess_options=options, providers=providers)
    except Exception as exc:
        raise RuntimeLoadError(f"ONNX Runtime could not load {model_path.name}: {exc}") from exc
    return OnnxRuntimeModel(session, label, slots)
