"""One optimization run: validate inputs, quantize each format, gate, benchmark, publish.

Nothing is written to the repository until every step before publishing has succeeded, and
then only the formats that passed the gate are published.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optimizer.calibration import TensorData, load_data
from optimizer.errors import GateRefused, OptimizerError
from optimizer.evaluate import check_metric, default_metric, drift_baseline, score
from optimizer.job import EVAL_BATCH, Candidate, Job
from optimizer.modes import ladder, run_format
from optimizer.package import PublishContext, check_model_dir, ensure_model_toml, publish, read_max_batch
from optimizer.progress import Progress, library_noise
from optimizer.prune import prune_onnx
from optimizer.report import Row, add_speedups, render
from optimizer.runtimes import F32, compile_openvino, openvino_predict, predict_all
from optimizer.sources import Source, load_source
from optimizer.speed import benchmark_rows

FORMATS = ("openvino", "onnx")
DEFAULT_MAX_BATCH = 64


@dataclass(frozen=True)
class OptimizeRequest:
    """The parameters of one run (all recorded in the manifest)."""

    source: Path
    calibration: Path
    evaluation: Path | None = None
    name: str | None = None
    repository: Path | None = None
    formats: tuple[str, ...] = FORMATS
    prune: float = 0.0
    max_accuracy_drop: float = 1.0
    metric: str | None = None
    subset_size: int = 300
    max_batch: int | None = None
    bench_seconds: float = 1.0
    quiet: bool = False
    max_seq_length: int | None = None   # Hugging Face sources: truncation length of text data
    modes: tuple[str, ...] | None = None  # quantization modes to try, in order (default: per format)


@dataclass
class OptimizeResult:
    model_dir: Path
    versions: list[int]
    rows: list[Row]
    refused: list[str] = field(default_factory=list)

    def table(self) -> str:
        return render(self.rows)


def optimize(request: OptimizeRequest) -> OptimizeResult:
    """Run the whole stage; raises OptimizerError (bad input) or GateRefused (nothing passed)."""
    _check_request(request)
    progress = Progress(request.quiet)
    with tempfile.TemporaryDirectory(prefix="appliance-optimize-") as tmp, library_noise(request.quiet):
        workdir = Path(tmp)
        source = load_source(request.source, workdir, max_seq_length=request.max_seq_length)
        model_dir = check_model_dir(*_destination(request, source))
        job = _job(request, source, workdir, progress)
        ladders = {fmt: ladder(fmt, source.kind, request.modes) for fmt in request.formats}
        candidates = [run_format(fmt, ladders[fmt], job) for fmt in request.formats]
        passing = [c for c in candidates if c.passed]
        refused = [_refusal(c) for c in candidates if not c.passed]
        for line in refused:
            progress.note(line)
        if not passing:
            raise GateRefused("no artifact passed the accuracy gate; nothing published: " + "; ".join(refused))
        max_batch = request.max_batch or read_max_batch(model_dir) or job.fixed_batch or DEFAULT_MAX_BATCH
        rows = benchmark_rows(job, candidates, max_batch, request.bench_seconds)
        add_speedups(rows)
        ensure_model_toml(model_dir, source, max_batch)
        versions = publish(passing, _context(request, job, model_dir, rows),
                           {r.format: r.to_dict() for r in rows if r.status == "published"},
                           {c.format: drift_baseline(job.evaluation.inputs, c.outputs)
                            for c in passing if c.outputs is not None})
        for row, version in zip([r for r in rows if r.status == "published"], versions, strict=True):
            row.artifact = f"{row.artifact} → v{version}"
        return OptimizeResult(model_dir, versions, rows, refused)


def _check_request(request: OptimizeRequest) -> None:
    unknown = [fmt for fmt in request.formats if fmt not in FORMATS]
    if unknown or not request.formats:
        raise OptimizerError(f"--format must list {' and/or '.join(FORMATS)}, got {','.join(request.formats)}")
    if request.max_accuracy_drop < 0:
        raise OptimizerError("--max-accuracy-drop must be zero or more points")
    if not 0.0 <= request.prune < 1.0:
        raise OptimizerError(f"--prune must be a fraction in [0, 1), got {request.prune}")
    if request.subset_size < 1:
        raise OptimizerError("--subset-size must be at least 1")
    for fmt in request.formats if request.modes else ():
        ladder(fmt, "onnx", request.modes)  # unknown names fail now, not after a long export


def _destination(request: OptimizeRequest, source: Source) -> tuple[Path, str]:
    repository = (request.repository or source.repository
                  or Path(os.environ.get("APPLIANCE_SERVER_MODELS", "models")))
    name = request.name or source.model_name
    if not name:
        raise OptimizerError("--name is required when the source is not a version inside a repository")
    return repository, name


def _job(request: OptimizeRequest, source: Source, workdir: Path, progress: Progress) -> Job:
    calibration = _load_data(request.calibration, source, "calibration")
    evaluation: TensorData = (_load_data(request.evaluation, source, "eval")
                              if request.evaluation else calibration)
    metric = request.metric or default_metric(evaluation.labels is not None)
    check_metric(metric, evaluation.labels is not None)
    model_path = source.onnx_path
    pruning: dict[str, Any] = {}
    if request.prune > 0:
        model_path = workdir / "pruned.onnx"
        pruning = prune_onnx(source.onnx_path, model_path, request.prune)
    # The reference is always the unpruned FP32 source, at real f32.
    batch = source.inputs[0].batch_dim or EVAL_BATCH
    compiled = compile_openvino(source.onnx_path, F32)
    batches = progress.bar(evaluation.batches(batch), "evaluating FP32 reference", -(-evaluation.rows // batch))
    reference = predict_all(openvino_predict(compiled), batches)
    return Job(source, model_path, calibration, evaluation, metric, request.max_accuracy_drop,
               reference=reference, reference_score=score(metric, reference, reference, evaluation.labels),
               subset_size=request.subset_size, progress=progress, workdir=workdir, pruning=pruning)


def _load_data(path: Path, source: Source, role: str) -> TensorData:
    """``.npz`` arrays for any model; a text file of sentences for a text model (tokenized here)."""
    from optimizer.text import is_text_file, load_text

    if source.text is not None and is_text_file(path):
        return load_text(path, source.text, source.inputs, role)
    return load_data(path, source.inputs, role)


def _refusal(candidate: Candidate) -> str:
    modes = [str(attempt["mode"]) for attempt in candidate.details.get("attempts", [])]
    tried = f" [modes tried: {', '.join(modes)}]" if len(modes) > 1 else ""
    if candidate.error:
        return f"{candidate.format}: failed: {candidate.error}{tried}"
    return f"{candidate.format}: refused: {candidate.gate.describe() if candidate.gate else 'not evaluated'}{tried}"


def _context(request: OptimizeRequest, job: Job, model_dir: Path, rows: list[Row]) -> PublishContext:
    parameters = {key: (str(value) if isinstance(value, Path) else value)
                  for key, value in asdict(request).items()}
    parameters["metric"] = job.metric
    parameters["formats"] = list(request.formats)

    def data(entry: TensorData) -> dict[str, Any]:
        return {"path": str(entry.path), "sha256": entry.sha256, "rows": entry.rows}

    provenance = {
        "source": str(job.source.path), "source_kind": job.source.kind, "source_sha256": job.source.sha256,
        "calibration": data(job.calibration), "eval": data(job.evaluation),
        "eval_is_calibration": job.evaluation is job.calibration,
    }
    text = job.source.text
    if text is None:
        return PublishContext(model_dir, job.source, provenance, parameters, [row.to_dict() for row in rows])
    preprocessing = {"kind": "text", **text.to_dict(), "inputs": [spec.name for spec in job.source.inputs],
                     "outputs": [spec.name for spec in job.source.outputs]}
    return PublishContext(model_dir, job.source, provenance, parameters, [row.to_dict() for row in rows],
                          companions=(text.tokenizer,), extra={"preprocessing": preprocessing})
