"""Publish the INT8 versions of the bundled ``digits`` sample (called by install.sh / build_samples)."""

from __future__ import annotations

from pathlib import Path

from modelrepo import list_versions, read_manifest
from optimizer.pipeline import OptimizeRequest, optimize

MODEL = "digits"


def optimize_bundled(repository: Path, *, quiet: bool = True, bench_seconds: float = 0.5) -> list[int]:
    """INT8 OpenVINO and ONNX versions of digits/1; skipped (returns []) if they already exist."""
    model_dir = repository / MODEL
    for version in list_versions(model_dir):
        manifest = read_manifest(model_dir / str(version))
        if manifest.precision == "int8" and manifest.parent_version == 1:
            return []
    data = model_dir / "data"
    result = optimize(OptimizeRequest(
        source=model_dir / "1", calibration=data / "calibration.npz", evaluation=data / "eval.npz",
        repository=repository, name=MODEL, quiet=quiet, bench_seconds=bench_seconds,
    ))
    return result.versions
