"""When nothing beats FP32 on this host: publish the FP32 source itself as the served version.

Only for a source that is not already a version of the model (a file or folder from outside the
repository); a repository version that is the source simply stays the served one. The artifact is
the fastest baseline's form: the ONNX file for ONNX Runtime, an FP32 OpenVINO IR (with the f32
precision hint when that baseline was pinned) for OpenVINO.
"""

from __future__ import annotations

import shutil

from optimizer.evaluate import GateResult
from optimizer.job import Candidate, Job
from optimizer.package import Publication
from optimizer.report import Row
from optimizer.runtimes import openvino_core
from optimizer.speedgate import best_baseline


def fp32_publication(job: Job, rows: list[Row], objective: str) -> Publication:
    """The best baseline for ``objective`` as a publishable, served artifact."""
    baseline = best_baseline(objective, rows)
    directory = job.workdir / "fp32"
    directory.mkdir(exist_ok=True)
    if baseline.format == "openvino":
        import openvino as ov

        model = openvino_core().read_model(str(job.source.onnx_path))
        ov.save_model(model, str(directory / "model.xml"), compress_to_fp16=False)
        model_file = "model.xml"
    else:
        shutil.copyfile(job.source.onnx_path, directory / "model.onnx")
        model_file = "model.onnx"
    gate = GateResult(job.metric, job.reference_score, job.reference_score, job.max_drop,
                      0.0, job.max_output_diff)
    details = {"mode": "fp32-source", "runtime_config": dict(baseline.runtime_config)}
    candidate = Candidate(baseline.format, "fp32", directory, model_file, gate, job.reference, details)
    row = Row(f"{baseline.artifact} (source)", baseline.format, baseline.runtime, "fp32", job.metric,
              job.reference_score, 0.0, baseline.size_bytes, baseline.speed, "published",
              baseline.speedup_latency, baseline.speedup_throughput, output_diff=0.0, serve=True,
              runtime_config=dict(baseline.runtime_config))
    row.decision = (f"served: no optimized artifact beats {baseline.artifact} on {objective} here, "
                    "so the FP32 source is published as the served version")
    row.speed_gate = {"objective": objective, "baseline": baseline.artifact, "serve": True,
                      "reason": row.decision}
    return Publication(candidate, row, {})
