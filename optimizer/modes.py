"""Each format's quantization modes, fastest first; the gate picks the first that keeps accuracy.

OpenVINO: full INT8 (NNCF, accuracy-controlled with eval data), then weight-only INT8 (activations
float: ~1.5× instead of ~2.5× on a transformer, but nearly lossless). ONNX: static QDQ INT8 (with
its float fallback), then dynamic INT8 (activation ranges per call). A mode that fails or misses
the gate is recorded in the published manifest's ``attempts`` so the choice can be checked later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optimizer.errors import OptimizerError
from optimizer.job import Candidate, Job

Mode = Callable[[Job], Candidate]


#: Mode names per format (``--modes`` picks and orders them).
MODES = {"openvino": ("int8", "weight-only"), "onnx": ("static", "dynamic")}


def _functions() -> dict[str, Mode]:
    from optimizer.qdq import quantize_onnx, quantize_onnx_dynamic
    from optimizer.quantize import compress_openvino_weights, quantize_openvino

    return {"int8": quantize_openvino, "weight-only": compress_openvino_weights,
            "static": quantize_onnx, "dynamic": quantize_onnx_dynamic}


def ladder(fmt: str, kind: str, requested: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The modes to try for ``fmt``, in order. Transformers try ONNX dynamic INT8 first: on them it is
    as fast as static QDQ here and more accurate, which is ONNX Runtime's own advice too."""
    if requested:
        unknown = sorted(set(requested) - {m for names in MODES.values() for m in names})
        if unknown:
            raise OptimizerError(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from "
                                 + "; ".join(f"{f}: {', '.join(n)}" for f, n in MODES.items()))
        chosen = tuple(m for m in requested if m in MODES[fmt])
        if not chosen:
            raise OptimizerError(f"--modes names no mode for format {fmt} ({', '.join(MODES[fmt])})")
        return chosen
    if fmt == "onnx" and kind == "hf":
        return ("dynamic", "static")
    return MODES[fmt]


def run_format(fmt: str, modes: tuple[str, ...], job: Job) -> Candidate:
    """Try ``modes`` in order; return the first passing candidate, else the best-scoring one."""
    attempts: list[dict[str, Any]] = []
    tried: list[Candidate] = []
    functions = _functions()
    for name in modes:
        candidate = _attempt(fmt, name, functions[name], job)
        attempts.append(_summary(name, candidate))
        tried.append(candidate)
        if candidate.passed:
            break
        job.progress.note(f"{fmt}: mode {name} {_verdict(candidate)}")
    candidate = tried[-1] if tried[-1].passed else _best(tried)
    candidate.details["attempts"] = attempts
    if job.pruning:
        candidate.details["pruning"] = job.pruning
    return candidate


def _best(tried: list[Candidate]) -> Candidate:
    """The refused mode that came closest (its figures name the format's refusal), else the last."""
    scored = [(c.gate.optimized, i) for i, c in enumerate(tried) if c.gate is not None and c.error is None]
    return tried[max(scored)[1]] if scored else tried[-1]


def _attempt(fmt: str, name: str, mode: Mode, job: Job) -> Candidate:
    """One mode; a failure is reported, not fatal to the other modes or formats."""
    try:
        return mode(job)
    except OptimizerError as exc:
        return Candidate(fmt, "int8", job.workdir, "", error=f"{name}: {exc}")
    except Exception as exc:  # a library crash in one mode must not hide the others' results
        return Candidate(fmt, "int8", job.workdir, "", error=f"{name}: {type(exc).__name__}: {str(exc)[:200]}")


def _summary(name: str, candidate: Candidate) -> dict[str, Any]:
    summary: dict[str, Any] = {"mode": name, "precision": candidate.precision}
    if candidate.gate is not None:
        summary["gate"] = candidate.gate.to_dict()
    if candidate.error:
        summary["error"] = candidate.error
    return summary


def _verdict(candidate: Candidate) -> str:
    if candidate.error:
        return f"failed ({candidate.error})"
    return f"refused ({candidate.gate.describe()})" if candidate.gate else "not evaluated"
