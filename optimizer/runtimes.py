"""Run a model on OpenVINO or ONNX Runtime the same way for evaluation and benchmarking.

The FP32 reference is pinned to real f32 (``INFERENCE_PRECISION_HINT=f32``): OpenVINO's CPU
default is bf16 on hardware that has it, which would make the reference itself lossy. Optimized
artifacts run with the runtime's defaults, as the server will run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.errors import OptimizerError

Inputs = dict[str, np.ndarray]
Predict = Callable[[Inputs], np.ndarray]

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_core() -> Any:
    import openvino as ov

    return ov.Core()


def compile_openvino(model: Any, config: dict[str, Any] | None = None) -> Any:
    """Compile an ``ov.Model`` or a model path on CPU; runtime errors become one-line errors."""
    core = openvino_core()
    try:
        return core.compile_model(model if not isinstance(model, Path) else str(model), "CPU",
                                  dict(config or {}))
    except RuntimeError as exc:
        raise OptimizerError(f"OpenVINO cannot compile the model: {_first_line(exc)}") from None


def openvino_predict(compiled: Any) -> Predict:
    """A predictor over one infer request; inputs are shared, not copied (copies cost ~70 µs)."""
    request = compiled.create_infer_request()

    def predict(inputs: Inputs) -> np.ndarray:
        request.infer(inputs, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, copy=True)

    return predict


def onnxruntime_session(model_path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        # ONNX Runtime lists AzureExecutionProvider first on some builds: name the CPU explicitly.
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception classes, not exported uniformly
        raise OptimizerError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None


def onnxruntime_predict(session: Any) -> Predict:
    first_output = session.get_outputs()[0].name

    def predict(inputs: Inputs) -> np.ndarray:
        return session.run([first_output], inputs)[0]

    return predict


def predict_all(predict: Predict, batches: Iterable[Inputs]) -> np.ndarray:
    """Concatenate the first output over all batches."""
    outputs = [np.asarray(predict(batch)) for batch in batches]
    return np.concatenate(outputs, axis=0)


def inference_precision(compiled: Any) -> str:
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
    except (RuntimeError, AttributeError):
        return "unknown"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # OpenVINO prefixes messages with source locations; the last line is the useful one.
    return (lines[-1] if lines else type(exc).__name__)[:300]
