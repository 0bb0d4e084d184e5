"""The appliance against NVIDIA Triton 2.51 with its dynamic batcher, side by side, in one command.

    python bench/vs_triton.py [--interval-ms 3000] [--json FILE] [--quick]

Triton is the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel, set up by
``bench/setup_triton.sh`` (run here on first use, into ``bench/.venv-triton``). The wheel has no ONNX
Runtime backend, so Triton serves each ONNX file through its Python backend: ``bench/triton_model.py``
runs ONNX Runtime (one intra-op thread) on the batch that the dynamic batcher gathered.

Models: "small" is the bundled ``digits`` (FP32 ONNX, 64→10), measured with JSON tensors; "medium" is
``benchlib.publish_mlp`` (1024→1536→1536→1000 FP32 MLP), measured with binary tensors. Triton's
config.pbtxt: max_batch_size 64, ``dynamic_batching { preferred_batch_size: [64]
max_queue_delay_microseconds: 2000 }``, one CPU instance, names and dims from the ONNX file. The
appliance runs one worker, audit off, admission fixed and wide (``APPLIANCE_LIMITS_ADAPTIVE=false``,
``APPLIANCE_LIMITS_MAX_CONCURRENCY=1024``), the prediction cache off (Triton has none here); the
medium model gets Triton's batching in model.toml (``preferred_batch_size = [64]``,
``max_queue_delay_us = 2000``), the small one keeps its shipped ``[batching]``.

perf_analyzer (HTTP, closed loop) at c=16 and c=64. "pinned": the server under ``taskset -c 1``,
perf_analyzer under ``taskset -c 0``; "unpinned": no taskset anywhere. One server runs at a time.
"avg batch": rows per runtime call over the measurement (Triton's statistics API; the appliance's
``appliance_batch_size`` histogram), what each server's batcher achieved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b

SERVER_CPU, CLIENT_CPU = "1", "0"
CONCURRENCY = (16, 64)
PINNINGS = ("pinned", "unpinned")
ENV = {"APPLIANCE_SERVER_WORKERS": "1", "APPLIANCE_AUDIT_ENABLED": "false", "APPLIANCE_AUTH_ENABLED": "false",
       "APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": "1024"}
BATCHING_TOML = "preferred_batch_size = [64]\nmax_queue_delay_us = 2000"
DYNAMIC_BATCHING = "dynamic_batching { preferred_batch_size: [ 64 ] max_queue_delay_microseconds: 2000 }"
PERF_TIMEOUT_S = 120
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64", 3: "TYPE_INT8", 2: "TYPE_UINT8"}


class SetupError(RuntimeError):
    pass


@dataclass
class Model:
    label: str  # small / medium
    name: str  # served name, the same on both servers
    input_name: str
    tensor_format: str
    data: Path


@dataclass
class Cell:
    model: str
    concurrency: int
    pinning: str
    server: str
    inf_s: float
    p50_ms: float
    p99_ms: float
    avg_batch: float | None = None
    error: str = ""
    note: str = ""


# --- Triton ------------------------------------------------------------------------------------
def setup_triton() -> str:
    """Path of the tritonserver wrapper that bench/setup_triton.sh writes (runs it; idempotent)."""
    result = subprocess.run(["bash", str(b.BENCH / "setup_triton.sh")], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise SetupError(f"bench/setup_triton.sh failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-1200:]}")
    return result.stdout.strip().splitlines()[-1]


def onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX file as config.pbtxt entries (dims without the batch one)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def entry(value: Any) -> dict[str, Any]:
        kind = value.type.tensor_type
        if kind.elem_type not in ONNX_TO_TRITON:
            raise SetupError(f"{path}: {value.name} has ONNX element type {kind.elem_type}, not mapped")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim][1:]
        return {"name": value.name, "data_type": ONNX_TO_TRITON[kind.elem_type], "dims": dims}

    return ([entry(v) for v in graph.input if v.name not in initializers], [entry(v) for v in graph.output])


def triton_config(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> str:
    def tensors(entries: list[dict[str, Any]]) -> str:
        return ",\n".join(f'  {{ name: "{e["name"]}" data_type: {e["data_type"]} dims: [ '
                          f'{", ".join(str(d) for d in e["dims"])} ] }}' for e in entries)

    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 64\n'
            f"input [\n{tensors(inputs)}\n]\noutput [\n{tensors(outputs)}\n]\n"
            f"{DYNAMIC_BATCHING}\ninstance_group [ {{ kind: KIND_CPU count: 1 }} ]\n")


def triton_repository(appliance_repo: Path, target: Path, names: list[str]) -> Path:
    """A Triton repository serving the newest version of each appliance model through triton_model.py."""
    for name in names:
        versions = sorted((p for p in (appliance_repo / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        manifest = json.loads((versions[-1] / "manifest.json").read_text())
        onnx_file = versions[-1] / manifest.get("model_file", "model.onnx")
        version = target / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_file, version / "model.onnx")
        shutil.copyfile(b.BENCH / "triton_model.py", version / "model.py")
        (target / name / "config.pbtxt").write_text(triton_config(name, *onnx_io(onnx_file)))
    return target


@contextlib.contextmanager
def triton(wrapper: str, repository: Path, log_file: Path, cpus: str | None) -> Iterator[b.Server]:
    """tritonserver on 127.0.0.1 (HTTP and gRPC on free ports, metrics off); SIGTERM, then the group."""
    port, grpc_port = b.free_port(), b.free_port()
    args = [wrapper, f"--model-repository={repository}", "--http-address=127.0.0.1", f"--http-port={port}",
            "--allow-grpc=true", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true", "--exit-timeout-secs=5", "--log-verbose=0"]
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]
    log = open(log_file, "ab")  # noqa: SIM115 - closed below
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
    try:
        try:
            b.wait_ready(port, process, timeout=180)
        except (RuntimeError, TimeoutError) as exc:
            errors = [line for line in log_file.read_text(errors="replace").splitlines()
                      if line.startswith("E") or "error" in line.lower()]
            raise SetupError(f"tritonserver did not become ready ({exc}):\n" + "\n".join(errors[-8:])[-2000:]) from exc
        yield b.Server(process, port, started, time.monotonic() - started, repository)
    finally:
        b.stop_process(process, 20)
        # the Python backend's stub processes, should any outlive their server
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def appliance_counts(port: int, model: str) -> tuple[float, float]:
    """(rows, batches) the appliance's ``appliance_batch_size`` histogram has counted for ``model``."""
    samples = b.scrape(port)
    return (b.metric_total(samples, "appliance_batch_size_sum", model=model),
            b.metric_total(samples, "appliance_batch_size_count", model=model))


def triton_counts(port: int, model: str) -> tuple[float, float]:
    """(inferences, executions) Triton's statistics API has counted for ``model`` so far."""
    with contextlib.suppress(Exception):
        status, body = b.http_get(f"http://127.0.0.1:{port}/v2/models/{model}/stats")
        if status == 200:
            stats = json.loads(body)["model_stats"][0]
            return float(stats["inference_count"]), float(stats["execution_count"])
    return float("nan"), float("nan")


# --- models and data -----------------------------------------------------------------------------
def build(work: Path) -> tuple[Path, Path, list[Model]]:
    """(appliance repository, Triton repository, models) under ``work``."""
    repo = b.copy_repository(b.bundled_models(fp32_only=True), work / "appliance")
    b.set_toml_section(repo / "digits" / "model.toml", "cache", "enabled = false")
    medium = b.publish_mlp(repo, "medium")
    b.set_toml_section(medium / "model.toml", "batching", BATCHING_TOML)
    b.set_toml_section(medium / "model.toml", "cache", "enabled = false")
    tri = triton_repository(repo, work / "triton", ["digits", "medium"])
    rows = np.random.default_rng(1).standard_normal((256, 1024)).astype(np.float32)
    models = [Model("small", "digits", "input", "json",
                    b.write_input_data(work / "small.json", "input", b.digits_rows(repo), streams=256)),
              Model("medium", "medium", "input", "binary",
                    b.write_input_data(work / "medium.json", "input", rows, streams=64))]
    return repo, tri, models


def warm_up(port: int, model: Model, count: int = 20) -> None:
    """A few JSON requests (first-call costs, e.g. the Python backend's first run) before measuring."""
    first = json.loads(model.data.read_text())["data"][0][model.input_name]
    body = json.dumps({"inputs": [{"name": model.input_name, "datatype": "FP32", "shape": [1, *first["shape"]],
                                   "data": first["content"]}]}).encode()
    import urllib.request

    for _ in range(count):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model.name}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


# --- measurement ---------------------------------------------------------------------------------
def perf(pa: str, port: int, model: Model, concurrency: int, pinning: str,
         args: argparse.Namespace) -> tuple[b.PerfResult, str]:
    """One perf_analyzer measurement, and a note when it needed the fallback.

    At ~10k req/s perf_analyzer's main thread takes several times the window to digest each one's
    timestamps (on 2 busy cores a 3 s window was seen to take 10-50 s): a run that outlasts
    ``PERF_TIMEOUT_S`` is repeated once with windows a third as long and any stability accepted.
    """
    common = {"concurrency": concurrency, "tensor_format": model.tensor_format,
              "cpus": CLIENT_CPU if pinning == "pinned" else None}
    try:
        return b.run_perf(pa, port, model.name, model.data, interval_ms=args.interval_ms,
                          stability=1000 if args.quick else 20, timeout=PERF_TIMEOUT_S, **common), ""
    except subprocess.TimeoutExpired:
        interval = max(500, args.interval_ms // 3)
        print(f"  ({model.label} c={concurrency} {pinning}: perf_analyzer ran past {PERF_TIMEOUT_S} s, "
              f"again with {interval} ms windows)", file=sys.stderr)
        return b.run_perf(pa, port, model.name, model.data, interval_ms=interval, stability=1000,
                          timeout=PERF_TIMEOUT_S, **common), f"fallback: {interval} ms windows, unchecked stability"


def measure(pa: str, server: b.Server, model: Model, pinning: str, name: str, args: argparse.Namespace) -> list[Cell]:
    cells = []
    counts = triton_counts if name == "triton" else appliance_counts
    warm_up(server.port, model)
    for concurrency in args.concurrency:
        before = counts(server.port, model.name)
        try:
            r, note = perf(pa, server.port, model, concurrency, pinning, args)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            cells.append(Cell(model.label, concurrency, pinning, name, float("nan"), float("nan"), float("nan"),
                              error=str(exc)[-400:]))
            print(f"  {name} {model.label} c={concurrency} {pinning}: FAILED {str(exc)[-200:]}", file=sys.stderr)
            continue
        after = counts(server.port, model.name)
        executions = after[1] - before[1]
        avg = round((after[0] - before[0]) / executions, 1) if executions > 0 else None
        cells.append(Cell(model.label, concurrency, pinning, name, round(r.throughput, 1), r.p50_ms, r.p99_ms, avg,
                          note=note))
        print(f"  {name:9} {model.label:6} c={concurrency:<3} {pinning:8} {r.throughput:9.1f} inf/s  "
              f"p99 {r.p99_ms:7.2f} ms  avg batch {avg}  {note}", file=sys.stderr)
    return cells


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrapper = setup_triton()
    pa = b.perf_analyzer()
    if pa is None:
        raise SetupError("perf_analyzer unavailable (bash bench/setup_perf_analyzer.sh)")
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-triton-") as tmp:
        work = Path(tmp)
        repo, tri, models = build(work)
        logs = work / "logs"
        logs.mkdir()
        for model in [m for m in models if m.label in args.models]:
            for pinning in args.pinning:
                cpus = SERVER_CPU if pinning == "pinned" else None
                state = work / f"state-{model.label}-{pinning}"
                state.mkdir()
                with b.serve(repo, state, env=ENV, cpus=cpus, log_file=logs / f"appliance-{state.name}.log") as srv:
                    cells += measure(pa, srv, model, pinning, "appliance", args)
                with triton(wrapper, tri, logs / f"triton-{state.name}.log", cpus) as srv:
                    cells += measure(pa, srv, model, pinning, "triton", args)
        if args.keep_logs:
            shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
    return {"interval_ms": args.interval_ms, "quick": args.quick, "cpus": os.cpu_count(),
            "server_cpu_pinned": SERVER_CPU, "client_cpu_pinned": CLIENT_CPU, "cells": [asdict(c) for c in cells],
            "rows": table_rows(cells)}


def table_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(c.model, c.concurrency, c.pinning) for c in cells},
                  key=lambda k: (k[0] != "small", PINNINGS.index(k[2]), k[1]))
    for model, concurrency, pinning in keys:
        pick = {c.server: c for c in cells if (c.model, c.concurrency, c.pinning) == (model, concurrency, pinning)}
        a, t = pick.get("appliance"), pick.get("triton")
        ratio = a.inf_s / t.inf_s if a and t and t.inf_s and t.inf_s == t.inf_s and a.inf_s == a.inf_s else None
        rows.append({"model": model, "concurrency": concurrency, "pinning": pinning,
                     "appliance_inf_s": a.inf_s if a else None, "appliance_p99_ms": a.p99_ms if a else None,
                     "appliance_avg_batch": a.avg_batch if a else None,
                     "triton_inf_s": t.inf_s if t else None, "triton_p99_ms": t.p99_ms if t else None,
                     "triton_avg_batch": t.avg_batch if t else None,
                     "ratio": round(ratio, 2) if ratio is not None else None,
                     "notes": "; ".join(f"{c.server}: {c.note or c.error[-80:]}" for c in (a, t)
                                        if c and (c.note or c.error))})
    return rows


def render(report: dict[str, Any]) -> str:
    def num(value: Any, fmt: str) -> str:
        return "n/a" if value is None or value != value else format(value, fmt)

    lines = ["| model | c | pinning | appliance inf/s | appliance p99 ms | Triton inf/s | Triton p99 ms "
             "| avg batch appliance / Triton | appliance/Triton |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['concurrency']} | {r['pinning']} | {num(r['appliance_inf_s'], '.0f')} | "
                     f"{num(r['appliance_p99_ms'], '.2f')} | {num(r['triton_inf_s'], '.0f')} | "
                     f"{num(r['triton_p99_ms'], '.2f')} | {num(r['appliance_avg_batch'], '.1f')} / "
                     f"{num(r['triton_avg_batch'], '.1f')} | "
                     f"{num(r['ratio'], '.2f')} |")
    lines += [f"note: {r['model']} c={r['concurrency']} {r['pinning']}: {r['notes']}"
              for r in report["rows"] if r["notes"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 ms windows, any stability")
    parser.add_argument("--models", default="small,medium", help="comma list of small, medium")
    parser.add_argument("--pinning", default=",".join(PINNINGS), help="comma list of pinned, unpinned")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="comma list")
    parser.add_argument("--keep-logs", type=Path, help="copy both servers' logs to this folder")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.pinning = [p for p in PINNINGS if p in args.pinning.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.quick:
        args.interval_ms = min(args.interval_ms, 500)
    if args.pinning and "pinned" in args.pinning and (os.cpu_count() or 1) < 2:
        print("pinned runs need two CPUs", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except SetupError as exc:
        print(f"vs_triton: Triton could not be set up: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = [c for c in report["cells"] if c["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
