"""INT8 vs FP32 on a ResNet-50-sized CNN, every configuration measured on this host in one run.

The network has ResNet-50's shape (bottleneck stages 3-4-6-3, 25.5 M parameters, 4.1 GFLOPs at
224×224) with random He-initialised weights: speed does not depend on what the weights learned,
and building the graph with ``onnx.helper`` needs no torch and no download. Calibration uses a few
random batches, which is enough to time the quantized kernels (not to judge accuracy).

Configurations: ONNX Runtime FP32, OpenVINO default (bf16 on CPUs with AVX512-BF16/AMX), OpenVINO
f32, OpenVINO INT8 (NNCF), ONNX Runtime INT8 (static QDQ, u8 activations, s8 per-channel weights).

Usage: ``python bench/int8_vs_fp32.py [--seconds 6] [--rounds 3] [--batch 8] [--calibration-batches 8] [--json FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("NNCF_CI", "1")  # no usage telemetry

from optimizer.benchmark import Speed, measure
from optimizer.progress import Progress

INPUT = "input"
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, first stride)


class _Graph:
    """Accumulates ONNX nodes and He-initialised weights for the CNN."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
             gain: float = 1.0) -> str:
        from onnx import helper, numpy_helper

        name = self._name("conv")
        w = self.rng.normal(0, gain * np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        b = np.zeros(cout, np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        self.nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                           kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[k // 2] * 4))
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        from onnx import helper

        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    def add(self, a: str, b: str) -> str:
        from onnx import helper

        name = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        name = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name


def _bottleneck(g: _Graph, x: str, cin: int, width: int, stride: int) -> str:
    out = width * 4
    y = g.conv(x, cin, width, 1)
    y = g.conv(y, width, width, 3, stride)
    y = g.conv(y, width, out, 1, relu=False, gain=0.3)  # small residual branch keeps activations sane
    shortcut = x if (cin == out and stride == 1) else g.conv(x, cin, out, 1, stride, relu=False)
    return g.relu(g.add(y, shortcut))


def resnet50_like(path: Path) -> Path:
    """Write the CNN as ONNX (dynamic batch) and return its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph()
    x = g.conv(INPUT, 3, 64, 7, 2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in STAGES:
        for block in range(blocks):
            x = _bottleneck(g, x, cin, width, stride if block == 0 else 1)
            cin = width * 4
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    w = g.rng.normal(0, np.sqrt(1.0 / cin), (cin, 1000)).astype(np.float32)
    g.inits += [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    logits = g.op("Gemm", [x, "fc_w", "fc_b"])
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=1))
    graph = helper.make_graph(
        g.nodes, "resnet50_like", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1000])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def calibration_batches(count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{INPUT: rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32)} for _ in range(count)]


def openvino_int8(onnx_path: Path, batches: list[dict[str, np.ndarray]], out_dir: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    target = out_dir / "resnet_int8.xml"
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def onnxruntime_int8(onnx_path: Path, batches: list[dict[str, np.ndarray]], out_dir: Path) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, target = out_dir / "resnet_pre.onnx", out_dir / "resnet_qdq.onnx"
    with contextlib.chdir(prepared.parent):  # ORT may leave a temp model + external data in the cwd
        quant_pre_process(str(onnx_path), str(prepared))
    items = iter(batches)

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(items, None)

    quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return target


def _openvino(path: Path, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    kernels = Counter(op.get_rt_info()["primitiveType"].astype(str)
                      for op in compiled.get_runtime_model().get_ordered_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    info = {"precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "conv_kernels": dict(kernels.most_common(3))}

    def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        request.infer(inputs, share_inputs=True)
        return request.get_output_tensor(0).data

    return predict, info


def _onnxruntime(path: Path) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda inputs: session.run(None, inputs)[0]), {}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    progress = Progress(quiet=not sys.stderr.isatty())
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        work = Path(tmp)
        fp32 = resnet50_like(work / "resnet50_like.onnx")
        batches = calibration_batches(args.calibration_batches)
        started = time.monotonic()
        ov_int8 = openvino_int8(fp32, batches, work)
        ov_quant_s = time.monotonic() - started
        started = time.monotonic()
        ort_int8 = onnxruntime_int8(fp32, batches, work)
        ort_quant_s = time.monotonic() - started
        configs = [
            ("onnxruntime fp32", lambda: _onnxruntime(fp32)),
            ("openvino default", lambda: _openvino(fp32, {})),
            ("openvino f32", lambda: _openvino(fp32, {"INFERENCE_PRECISION_HINT": "f32"})),
            ("openvino int8 (nncf)", lambda: _openvino(ov_int8, {})),
            ("onnxruntime int8 (qdq u8s8)", lambda: _onnxruntime(ort_int8)),
        ]
        data = batches[0]
        predictors = [(label, *make()) for label, make in configs]
        speeds: dict[str, list[Speed]] = {label: [] for label, _, _ in predictors}
        # Round-robin rounds, so a slow minute on a shared host hurts every configuration alike.
        for round_index in range(args.rounds):
            for label, predict, _ in predictors:
                speeds[label].append(measure(predict, data, single=1, max_batch=args.batch,
                                             seconds=args.seconds / args.rounds, progress=progress,
                                             desc=f"{label} (round {round_index + 1})"))
        print(f"  quantization took {ov_quant_s:.0f} s (NNCF) and {ort_quant_s:.0f} s (ONNX Runtime)",
              file=sys.stderr)
        return [{"config": label, **_median(speeds[label]), **info} for label, _, info in predictors]


def _median(speeds: list[Speed]) -> dict[str, Any]:
    keys = ("latency_p50_ms", "latency_p99_ms", "throughput_rows_s")
    row: dict[str, Any] = {key: float(np.median([getattr(s, key) for s in speeds])) for key in keys}
    row["max_batch"] = speeds[0].max_batch
    row["latency_samples"] = sum(s.latency_samples for s in speeds)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    base = {r["config"]: r for r in rows}
    ort, ov_default = base["onnxruntime fp32"], base["openvino default"]
    lines = [f"{'configuration':30} {'p50 ms':>8} {'p99 ms':>8} {'img/s':>8}  {'vs ORT fp32':>12} "
             f"{'vs OV default':>14}  precision / conv kernels"]
    for r in rows:
        vs_ort = ort["latency_p50_ms"] / r["latency_p50_ms"]
        vs_ov = ov_default["latency_p50_ms"] / r["latency_p50_ms"]
        thr_ort = r["throughput_rows_s"] / ort["throughput_rows_s"]
        lines.append(f"{r['config']:30} {r['latency_p50_ms']:8.1f} {r['latency_p99_ms']:8.1f} "
                     f"{r['throughput_rows_s']:8.1f}  {vs_ort:5.2f}x/{thr_ort:4.2f}x {vs_ov:13.2f}x  "
                     f"{r.get('precision', '-')} {r.get('conv_kernels', '')}")
    lines.append(f"(latency at batch 1; throughput at batch {rows[0]['max_batch']}; 'vs ORT fp32' = "
                 "latency ratio / throughput ratio)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time per configuration and figure")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (medians are reported)")
    parser.add_argument("--batch", type=int, default=8, help="batch for the throughput figure")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = run(args)
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
