"""OpenVINO backend: IR or ONNX, compiled once, run through an ``AsyncInferQueue``.

Fast paths used: inputs are shared with the infer request (no copy — ``start_async`` with
``share_inputs=True``), the queue has as many requests as the compiled model's optimal number,
and compiled blobs are cached under the state folder so restarts skip compilation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from appliance.runtimes.base import Completion, PortInfo, RuntimeLoadError, Tensors
from appliance.runtimes.device import openvino_device

_OV_TO_PROTOCOL = {
    "boolean": "BOOL", "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64",
    "i8": "INT8", "i16": "INT16", "i32": "INT32", "i64": "INT64", "f16": "FP16", "f32": "FP32",
    "f64": "FP64", "string": "BYTES",
}

_core: Any = None


def core() -> Any:
    """One ``ov.Core`` per process: it owns the plugins and their thread pools."""
    global _core
    if _core is None:
        import openvino as ov

        _core = ov.Core()
    return _core


def _ports(ports: Any) -> tuple[PortInfo, ...]:
    infos = []
    for port in ports:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        datatype = _OV_TO_PROTOCOL.get(port.get_element_type().get_type_name(), "FP32")
        infos.append(PortInfo(port.get_any_name(), datatype, shape))
    return tuple(infos)


class OpenVinoModel:
    runtime = "openvino"

    def __init__(self, compiled: Any, device: str, slots: int, keepalive: Any = None) -> None:
        import openvino as ov

        self._compiled = compiled
        self._keepalive = keepalive  # buffers OpenVINO may still read (models loaded from memory)
        self.device = device
        self.inputs = _ports(compiled.inputs)
        self.outputs = _ports(compiled.outputs)
        self._output_names = [p.name for p in self.outputs]
        self.slots = slots
        self._queue = ov.AsyncInferQueue(compiled, slots)
        self._queue.set_callback(self._finished)

    def _finished(self, request: Any, userdata: tuple[Completion, Tensors]) -> None:
        done, _inputs = userdata  # _inputs kept alive until here: they are shared, not copied
        try:
            results = {name: np.array(request.get_output_tensor(i).data, copy=True)
                       for i, name in enumerate(self._output_names)}
        except Exception as exc:  # report, never raise into the runtime's thread
            done(exc)
            return
        done(results)

    def start(self, inputs: Tensors, done: Completion) -> None:
        try:
            self._queue.start_async(inputs, (done, inputs), share_inputs=True)
        except Exception as exc:
            done(exc)

    def infer(self, inputs: Tensors) -> Tensors:
        result = self._compiled(inputs)
        return {name: np.array(result[i], copy=True) for i, name in enumerate(self._output_names)}

    def close(self) -> None:
        self._queue.wait_all()


def load_openvino(model_path: Path, *, device: str, precision: str, performance_hint: str,
                  nireq: int, cache_dir: Path | None, threads: int,
                  weights: bytes | None = None, model_bytes: bytes | None = None,
                  extra_config: dict[str, Any] | None = None) -> OpenVinoModel:
    """Read and compile an IR (``.xml`` + ``.bin``) or ONNX model, from disk or from memory."""
    ov_core = core()
    chosen = openvino_device(device, ov_core.available_devices)
    config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
    if precision.lower() in ("fp32", "f32") and chosen == "CPU":
        # The CPU plugin runs "FP32" models in bf16 on AMX hardware unless told otherwise.
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    # Properties the optimizer measured as paying off (e.g. sparse-weight decompression).
    config.update(extra_config or {})
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    keepalive = None
    try:
        if model_bytes is not None:
            import openvino as ov

            keepalive = np.frombuffer(weights, dtype=np.uint8) if weights else None
            model = ov_core.read_model(
                model=model_bytes, weights=ov.Tensor(keepalive) if keepalive is not None else ov.Tensor())
            compiled = ov_core.compile_model(model, chosen, config)
        else:
            compiled = ov_core.compile_model(str(model_path), chosen, config)
    except Exception as exc:
        raise RuntimeLoadError(f"OpenVINO could not compile {model_path.name} for {chosen}: {exc}") from exc
    slots = nireq or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    return OpenVinoModel(compiled, chosen, max(1, slots), keepalive=(keepalive, model_bytes))
