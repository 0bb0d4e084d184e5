"""``appliance optimize`` (and ``python -m optimizer``): INT8 + pruning, gated, published as versions.

Imports nothing heavy at import time, so ``appliance --help`` stays fast; the work happens in
:func:`run`. Exit codes: 0 published, 1 the gate refused every format, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "optimize", help="quantize (INT8) / prune a model and publish it as a new version",
        description="Quantize an FP32 model to INT8 (OpenVINO IR and/or ONNX), gate it on measured "
                    "accuracy, benchmark it and publish each passing format as a new version.")
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="FP32 ONNX file, repository version folder, or Hugging Face "
                        "model folder (needs the 'hf' extra; served as input_ids, attention_mask → embeddings)")
    parser.add_argument("--name", help="model name in the repository (default: the source's)")
    parser.add_argument("--calibration", type=Path, required=True,
                        help=".npz with one array per model input, named after it; for a Hugging Face "
                        "folder also a .txt file of sentences, one per line")
    parser.add_argument("--eval", dest="evaluation", type=Path,
                        help=".npz of held-out rows (+ 'labels'), or .txt sentences for a Hugging Face folder; "
                        "without it the gate uses calibration rows")
    parser.add_argument("--format", default="openvino,onnx", help="openvino, onnx or both (default)")
    parser.add_argument("--prune", type=float, default=0.0, metavar="SPARSITY",
                        help="magnitude-prune Conv/MatMul/Gemm weights to this fraction first")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                        help="largest allowed drop in points (100 × metric) against FP32 (default 1)")
    parser.add_argument("--metric", choices=("accuracy", "top1-agreement", "cosine", "mse"),
                        help="gate metric (default: accuracy with labels, else cosine)")
    parser.add_argument("--repository", type=Path, help="model repository (default: the source's, "
                        "else $APPLIANCE_SERVER_MODELS, else ./models)")
    parser.add_argument("--subset-size", type=int, default=300, help="calibration rows used (300)")
    parser.add_argument("--max-batch", type=int, help="batch for the throughput figure "
                        "(default: model.toml max_batch_size, else 64)")
    parser.add_argument("--bench-seconds", type=float, default=1.0,
                        help="wall time per benchmark measurement (default 1)")
    parser.add_argument("--modes", help="quantization modes to try in order until one passes the gate: "
                        "openvino int8, weight-only; onnx static, dynamic (default: all, fastest first)")
    parser.add_argument("--max-seq-length", type=int, metavar="TOKENS",
                        help="Hugging Face sources: truncate text data to this many tokens (default: the "
                        "folder's sentence-transformers max_seq_length, else 256)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or library logs")


def run(args: argparse.Namespace) -> int:
    from optimizer.errors import GateRefused, OptimizerError
    from optimizer.pipeline import OptimizeRequest, optimize

    request = OptimizeRequest(
        source=args.source, calibration=args.calibration, evaluation=args.evaluation, name=args.name,
        repository=args.repository, formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
        prune=args.prune, max_accuracy_drop=args.max_accuracy_drop, metric=args.metric,
        subset_size=args.subset_size, max_batch=args.max_batch, bench_seconds=args.bench_seconds,
        quiet=args.quiet, max_seq_length=args.max_seq_length,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()) if args.modes else None,
    )
    try:
        result = optimize(request)
    except GateRefused as exc:
        print(f"appliance optimize: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OptimizerError as exc:
        print(f"appliance optimize: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.table())
    for line in result.refused:
        print(line)
    published = ", ".join(f"{result.model_dir.name}/{v}" for v in result.versions)
    print(f"published {published} in {result.model_dir.parent}")
    return 0
