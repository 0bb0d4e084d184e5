"""One optimization run: validate inputs, quantize each format, gate, benchmark, publish.

Nothing is written to the repository until every step before publishing has succeeded, and
then only the formats that passed the accuracy gate are published; the speed gate decides which
of them the version policy serves (``"serve"`` in the manifest). When none is faster than the best
FP32 way this host runs the source and the source is not already a version of the model, the FP32
source itself is published as the served version.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from optimizer.benchmark import ROUNDS, Protocol
from optimizer.calibration import TensorData, load_data
from optimizer.errors import GateRefused, OptimizerError
from optimizer.evaluate import check_metric, default_metric, drift_baseline, score
from optimizer.fallback import fp32_publication
from optimizer.intake import text_preprocessing
from optimizer.job import EVAL_BATCH, Candidate, Job
from optimizer.modes import ladder, run_format
from optimizer.package import (
    Publication,
    PublishContext,
    check_model_dir,
    ensure_model_toml,
    is_version_of,
    publish,
    read_max_batch,
)
from optimizer.progress import Progress, library_noise
from optimizer.prune import prune_onnx
from optimizer.report import Row, add_speedups, render
from optimizer.runtimes import F32, compile_openvino, openvino_predict, predict_all
from optimizer.sources import Source, load_source
from optimizer.speed import benchmark_rows
from optimizer.speedgate import OBJECTIVES, SpeedPolicy, apply

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
    objective: str = "latency"          # latency | throughput | size: the figure the speed gate weighs
    min_speedup: float = 1.1            # served only if this much better than the best FP32 baseline
    allow_slower: bool = False          # serve what passes the accuracy gate even if not faster
    quantize_outputs: bool = False      # also quantize the output ops (Softmax, normalisation)
    max_output_diff: float | None = 0.01  # mean |output − FP32 output| allowed (None: not gated)
    seed: int = 0                       # calibration subset
    bench_rounds: int = ROUNDS


@dataclass
class OptimizeResult:
    model_dir: Path
    versions: list[int]
    rows: list[Row]
    refused: list[str] = field(default_factory=list)
    served: list[bool] = field(default_factory=list)  # per version: the speed gate's serve flag

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
        jobs = _jobs(request, source, workdir, progress)
        candidates = [run_format(fmt, ladder(fmt, source.kind, request.modes), job)
                      for job in jobs for fmt in request.formats]
        refused = [_refusal(c) for c in candidates if not c.passed]
        for line in refused:
            progress.note(line)
        if not any(c.passed for c in candidates):
            raise GateRefused("no artifact passed the accuracy gate; nothing published: " + "; ".join(refused))
        max_batch = request.max_batch or read_max_batch(model_dir) or jobs[0].fixed_batch or DEFAULT_MAX_BATCH
        protocol = Protocol(jobs[0].fixed_batch or 1, max_batch, request.bench_seconds, request.bench_rounds)
        rows = benchmark_rows(jobs[0], candidates, protocol)
        add_speedups(rows)
        apply(rows, SpeedPolicy(request.objective, request.min_speedup, request.allow_slower))
        items = _publications(jobs[0], candidates, rows, model_dir, request.objective)
        ensure_model_toml(model_dir, source, max_batch)
        versions = publish(items, _context(request, jobs[0], model_dir, rows, protocol))
        for item, version in zip(items, versions, strict=True):
            item.row.artifact = f"{item.row.artifact} → v{version}"
        return OptimizeResult(model_dir, versions, rows, refused, [bool(item.row.serve) for item in items])


def _publications(job: Job, candidates: list[Candidate], rows: list[Row], model_dir: Path,
                  objective: str) -> list[Publication]:
    """What passed both gates' rules, plus the FP32 source when nothing beats it and it is not a version yet."""
    candidate_rows = rows[len(rows) - len(candidates):]
    items = [Publication(c, row, drift_baseline(job.evaluation.inputs, c.outputs) if c.outputs is not None else {})
             for c, row in zip(candidates, candidate_rows, strict=True) if row.status == "published"]
    if not any(item.row.serve for item in items):
        if is_version_of(job.source, model_dir):
            for item in items:
                item.row.decision += f"; version {job.source.version} (the FP32 source) stays the served one"
        else:
            items.append(fp32_publication(job, rows, objective))
            rows.append(items[-1].row)
    return items


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
    if request.objective not in OBJECTIVES:
        raise OptimizerError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {request.objective!r}")
    if request.min_speedup < 0 or (request.max_output_diff is not None and request.max_output_diff < 0):
        raise OptimizerError("--min-speedup and --max-output-diff must be zero or more")
    if request.bench_rounds < 1:
        raise OptimizerError("--bench-rounds must be at least 1")
    for fmt in request.formats if request.modes else ():
        ladder(fmt, "onnx", request.modes)  # unknown names fail now, not after a long export


def _destination(request: OptimizeRequest, source: Source) -> tuple[Path, str]:
    repository = (request.repository or source.repository
                  or Path(os.environ.get("APPLIANCE_SERVER_MODELS", "models")))
    name = request.name or source.model_name
    if not name:
        raise OptimizerError("--name is required when the source is not a version inside a repository")
    return repository, name


def _jobs(request: OptimizeRequest, source: Source, workdir: Path, progress: Progress) -> list[Job]:
    """The unpruned job, and with ``--prune`` a pruned twin (its own workdir) the gate weighs against it."""
    job = _job(request, source, workdir, progress)
    if request.prune <= 0:
        return [job]
    pruned_dir = workdir / "pruned"
    pruned_dir.mkdir()
    model_path = pruned_dir / "pruned.onnx"
    pruning = prune_onnx(source.onnx_path, model_path, request.prune)
    return [job, replace(job, model_path=model_path, workdir=pruned_dir, pruning=pruning)]


def _job(request: OptimizeRequest, source: Source, workdir: Path, progress: Progress) -> Job:
    calibration = _load_data(request.calibration, source, "calibration")
    evaluation: TensorData = (_load_data(request.evaluation, source, "eval")
                              if request.evaluation else calibration)
    metric = request.metric or default_metric(evaluation.labels is not None)
    check_metric(metric, evaluation.labels is not None)
    # The reference is always the unpruned FP32 source, at real f32.
    batch = source.inputs[0].batch_dim or EVAL_BATCH
    compiled = compile_openvino(source.onnx_path, F32)
    batches = progress.bar(evaluation.batches(batch), "evaluating FP32 reference", -(-evaluation.rows // batch))
    reference = predict_all(openvino_predict(compiled), batches)
    return Job(source, source.onnx_path, calibration, evaluation, metric, request.max_accuracy_drop,
               reference=reference, reference_score=score(metric, reference, reference, evaluation.labels),
               subset_size=request.subset_size, progress=progress, workdir=workdir,
               quantize_outputs=request.quantize_outputs, max_output_diff=request.max_output_diff,
               seed=request.seed)


def _load_data(path: Path, source: Source, role: str) -> TensorData:
    """``.npz`` arrays for any model; a text file of sentences for a text model (tokenized here)."""
    from optimizer.text import is_text_file, load_text

    if source.text is not None and is_text_file(path):
        return load_text(path, source.text, source.inputs, role)
    return load_data(path, source.inputs, role)


def _refusal(candidate: Candidate) -> str:
    modes = [str(attempt["mode"]) for attempt in candidate.details.get("attempts", [])]
    tried = f" [modes tried: {', '.join(modes)}]" if len(modes) > 1 else ""
    label = candidate.format + (" (pruned)" if candidate.details.get("pruning") else "")
    if candidate.error:
        return f"{label}: failed: {candidate.error}{tried}"
    return f"{label}: refused: {candidate.gate.describe() if candidate.gate else 'not evaluated'}{tried}"


def _context(request: OptimizeRequest, job: Job, model_dir: Path, rows: list[Row],
             protocol: Protocol) -> PublishContext:
    parameters = {key: (str(value) if isinstance(value, Path) else value)
                  for key, value in asdict(request).items()}
    parameters["metric"] = job.metric
    parameters["formats"] = list(request.formats)
    parameters["benchmark"] = asdict(protocol)

    def data(entry: TensorData) -> dict[str, Any]:
        return {"path": str(entry.path), "sha256": entry.sha256, "rows": entry.rows}

    provenance = {
        "source": str(job.source.path), "source_kind": job.source.kind, "source_sha256": job.source.sha256,
        "calibration": data(job.calibration), "eval": data(job.evaluation),
        "eval_is_calibration": job.evaluation is job.calibration,
    }
    report = [row.to_dict() for row in rows]
    text = job.source.text
    if text is None:
        return PublishContext(model_dir, job.source, provenance, parameters, report)
    return PublishContext(model_dir, job.source, provenance, parameters, report,
                          companions=(text.tokenizer,), extra={"preprocessing": text_preprocessing(job.source)})
