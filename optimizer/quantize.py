"""OpenVINO INT8 through NNCF: post-training quantization, or weight-only compression.

With eval data, NNCF's accuracy-controlled mode is used: it ranks the quantized layers by how much
each costs on the eval rows and reverts the worst to float until the drop is within the limit (the
fix for models fed un-normalised features, whose first layer collapses under per-tensor INT8).
Transformer sources (Hugging Face folders) are quantized with NNCF's transformer model type
(SmoothQuant, attention patterns kept in float). Weight-only INT8 keeps activations in float: slower
than full INT8, but it loses almost nothing (cosine ≥ 0.999 on all-MiniLM-L6-v2), so it is the
next rung when full INT8 misses the gate.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from optimizer.evaluate import per_row
from optimizer.job import Candidate, Job
from optimizer.outputs import ignored_scope
from optimizer.progress import disable_usage_telemetry
from optimizer.runtimes import compile_openvino, inference_precision, openvino_core, openvino_predict

#: Ops whose float inputs NNCF quantizes; listed in the manifest when left in float.
_COMPUTE_OPS = {"MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"}
#: Rows NNCF ranks layers on; more rows rank better but each costs one inference per layer.
RANKING_ROWS = 300


def quantize_openvino(job: Job, *, config: dict[str, Any] | None = None) -> Candidate:
    """Quantize ``job.model_path`` and save the IR (weights uncompressed) under the job's workdir."""
    disable_usage_telemetry()
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR if job.progress.quiet else logging.INFO)
    model = openvino_core().read_model(str(job.model_path))
    # A list, not a generator: NNCF walks the data once per algorithm (min/max, bias correction).
    calibration = nncf.Dataset(job.calibration_items())
    subset = min(job.subset_size, job.calibration.rows)
    extra: dict[str, Any] = {"model_type": nncf.ModelType.TRANSFORMER} if job.source.kind == "hf" else {}
    scope = ignored_scope(model, job.quantize_outputs)
    if scope is not None:
        extra["ignored_scope"] = scope
    with job.progress.library_output():
        if job.evaluation is job.calibration:
            quantized = nncf.quantize(model, calibration, subset_size=subset, **extra)
            mode = "post-training"
        else:
            quantized = _with_accuracy_control(job, model, calibration, subset, extra)
            mode = "accuracy-control"
    directory = job.workdir / "openvino"
    directory.mkdir(exist_ok=True)
    # FP16 weight compression is OpenVINO's default; INT8 artifacts keep their float parts exact.
    ov.save_model(quantized, str(directory / "model.xml"), compress_to_fp16=False)
    compiled = compile_openvino(directory / "model.xml", config)
    outputs, gate = job.evaluate(openvino_predict(compiled), "evaluating OpenVINO INT8")
    details = {
        "mode": mode, "runtime_config": dict(config or {}),
        "evaluated_precision": inference_precision(compiled),
        "float_nodes": float_nodes(quantized),
        "float_outputs": list(scope.names) if scope is not None else [],
    }
    if "model_type" in extra:
        details["model_type"] = "transformer"
    return Candidate("openvino", "int8", directory, "model.xml", gate, outputs, details)


def compress_openvino_weights(job: Job) -> Candidate:
    """Weight-only INT8 (asymmetric, per output channel): activations stay float, no calibration needed."""
    disable_usage_telemetry()
    import nncf
    import openvino as ov

    model = openvino_core().read_model(str(job.model_path))
    with job.progress.library_output():
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    directory = job.workdir / "openvino-weights"
    directory.mkdir(exist_ok=True)
    ov.save_model(compressed, str(directory / "model.xml"), compress_to_fp16=False)
    compiled = compile_openvino(directory / "model.xml")
    outputs, gate = job.evaluate(openvino_predict(compiled), "evaluating OpenVINO INT8 weights")
    details = {"mode": "weight-only", "weights": "int8_asym", "activations": "float",
               "runtime_config": {}, "evaluated_precision": inference_precision(compiled)}
    return Candidate("openvino", "int8-weights", directory, "model.xml", gate, outputs, details)


def _with_accuracy_control(job: Job, model: Any, calibration: Any, subset: int, extra: dict[str, Any]) -> Any:
    import nncf

    rows = [{name: array[i:i + 1] for name, array in job.evaluation.inputs.items()}
            for i in range(0, job.evaluation.rows, job.fixed_batch or 1)]
    validation = nncf.Dataset([(row, index) for index, row in enumerate(rows)], lambda item: item[0])
    batch = job.fixed_batch or 1
    labels = job.evaluation.labels
    # NNCF divides by the initial metric (even for absolute drops); mse scores 0 at best, so shift it.
    offset = 1.0 if job.metric == "mse" else 0.0

    def validate(compiled: Any, items: Any) -> tuple[float, list[float]]:
        values: list[float] = []
        for row, index in items:
            out = np.asarray(compiled(row)[0])
            span = slice(index * batch, index * batch + out.shape[0])
            scores = per_row(job.metric, out, job.reference[span], None if labels is None else labels[span])
            values.extend((scores + offset).tolist())
        return float(np.mean(values)), values

    restorer = nncf.AdvancedAccuracyRestorerParameters(ranking_subset_size=min(RANKING_ROWS, len(rows)))
    return nncf.quantize_with_accuracy_control(
        model, calibration, validation, validate, max_drop=job.max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=subset,
        advanced_accuracy_restorer_parameters=restorer, **extra,
    )


def float_nodes(model: Any) -> list[str]:
    """Compute nodes whose activations were left unquantized (reverted by the accuracy control)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _COMPUTE_OPS:
            continue
        producers = {value.get_node().get_type_name() for value in op.input_values()}
        if "FakeQuantize" not in producers:
            # The ONNX frontend splits Gemm into "<name>/WithoutBiases" (MatMul) + "<name>" (Add).
            names.append(op.get_friendly_name().removesuffix("/WithoutBiases"))
    return names
