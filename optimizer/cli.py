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
                        help="wall time per model and figure, over all rounds (default 1)")
    parser.add_argument("--bench-rounds", type=int, default=5,
                        help="interleaved benchmark rounds; figures are medians of rounds (default 5)")
    parser.add_argument("--objective", choices=("latency", "throughput", "size"), default="latency",
                        help="what the speed gate weighs: batch-1 p50 latency, throughput at the serving "
                        "batch, or size on disk (default latency)")
    parser.add_argument("--min-speedup", type=float, default=1.1, metavar="RATIO",
                        help="serve an artifact only if it beats the best FP32 way this host runs the source "
                        "by this ratio, beyond the benchmark's noise (default 1.1); slower ones are "
                        "published with serve=false")
    parser.add_argument("--allow-slower", action="store_true",
                        help="serve what passes the accuracy gate even if it is not faster")
    parser.add_argument("--max-output-diff", type=float, default=0.01, metavar="DIFF",
                        help="largest mean absolute difference of outputs against FP32, in output units "
                        "(probabilities: 0.01 = one point; default 0.01); negative: not gated")
    parser.add_argument("--quantize-outputs", action="store_true",
                        help="also quantize the output ops (Softmax, Sigmoid, normalisation); by default "
                        "they stay float so answers are not rounded to 8-bit steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration subset (default 0)")
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
        quiet=args.quiet, max_seq_length=args.max_seq_length, bench_rounds=args.bench_rounds,
        objective=args.objective, min_speedup=args.min_speedup, allow_slower=args.allow_slower,
        max_output_diff=None if args.max_output_diff < 0 else args.max_output_diff,
        quantize_outputs=args.quantize_outputs, seed=args.seed,
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
    published = ", ".join(f"{result.model_dir.name}/{v}" + ("" if serve else " (serve=false)")
                          for v, serve in zip(result.versions, result.served, strict=True))
    print(f"published {published} in {result.model_dir.parent}")
    return 0
