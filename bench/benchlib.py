"""Shared plumbing of the serving benches: build the bundled model, start a real server on
127.0.0.1 (optionally pinned to one core), drive it with Triton's perf_analyzer, read its CSV.

Nothing here reaches beyond the loopback interface. Every bench builds its repository in a
temporary folder (or reuses ``--models``), so each runs standalone.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
#: Built repositories are reused between bench runs (building the digits model takes ~1 min).
MODEL_CACHE = BENCH / ".cache" / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_models(fp32_only: bool = True) -> Path:
    """The bundled ``digits`` repository, built once into ``bench/.cache`` and reused.

    ``fp32_only``: version 1 only (FP32 ONNX); otherwise as install.sh builds it (INT8 versions too).
    """
    target = MODEL_CACHE if fp32_only else MODEL_CACHE.with_name("models-int8")
    marker = target / "digits" / "1" / "manifest.json"
    if not marker.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="models-", dir=target.parent))
        args = [PYTHON, str(ROOT / "models" / "build_samples.py"), "--repository", str(tmp)]
        subprocess.run(args + (["--fp32-only"] if fp32_only else []), check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def copy_repository(source: Path, target: Path, models: tuple[str, ...] = ("digits",)) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in models:
        shutil.copytree(source / name, target / name, dirs_exist_ok=True)
    return target


def publish_mlp(repository: Path, name: str = "medium", sizes: tuple[int, ...] = (1024, 1536, 1536, 1000),
                max_batch_size: int = 64) -> Path:
    """An FP32 ONNX MLP (ReLU between layers, softmax at the end) with seeded random weights: the
    medium model of FIELD-NOTES' peer comparison (1024→1536→1536→1000, ~500× the bundled model)."""
    from onnx import TensorProto, helper, numpy_helper

    from modelrepo import Manifest, publish_version, staging_directory

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weights.append(numpy_helper.from_array((rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in))
                                               .astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Softmax" if last else "Relu", [f"m{i}"], ["probabilities" if last else f"r{i}"],
                                      **({"axis": -1} if last else {})))
        previous = f"r{i}"
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", sizes[0]])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", sizes[-1]])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.toml").write_text(f"max_batch_size = {max_batch_size}\nruntime = \"onnxruntime\"\n")
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes(model.SerializeToString())
        Manifest.for_directory(staging, format="onnx", precision="fp32", model_file="model.onnx").write(staging)
        publish_version(model_dir, staging)
    return model_dir


def histogram_quantile(before: list[Any], after: list[Any], name: str, q: float, **labels: str) -> float:
    """The ``q`` quantile (seconds) of what a server histogram observed between two scrapes, by
    linear interpolation inside the bucket, as Prometheus' histogram_quantile does."""
    def buckets(samples: list[Any]) -> dict[float, float]:
        out: dict[float, float] = {}
        for s in samples:
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                bound = float(s.labels["le"])
                out[bound] = out.get(bound, 0.0) + s.value
        return out

    first, second = buckets(before), buckets(after)
    bounds = sorted(second)
    counts = [second[b] - first.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower


def set_toml_section(path: Path, section: str, body: str) -> None:
    """Replace (or append) a ``[section]`` of a model.toml with ``body``."""
    text = path.read_text()
    head = f"[{section}]"
    if head in text:
        start = text.index(head)
        end = text.find("\n[", start + 1)
        text = text[:start] + f"{head}\n{body}\n" + (text[end:] if end >= 0 else "")
    else:
        text += f"\n{head}\n{body}\n"
    path.write_text(text)


def digits_rows(models: Path, count: int = 256) -> np.ndarray:
    data = np.load(models / "digits" / "data" / "eval.npz")
    return data["input"][:count].astype(np.float32)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    started: float
    ready_s: float
    state: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int, headers: dict[str, str] | None = None) -> list[Any]:
    """The samples of the server's ``/metrics`` (prometheus-client's own text parser); [] if refused."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(f"http://127.0.0.1:{port}/metrics", headers=headers)
    if status != 200:
        return []
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def metric_total(samples: list[Any], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            status, _ = http_get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=0.5)
            if status == 200:
                return
        time.sleep(0.01)
    raise TimeoutError("server not ready in time")


def init_audit_keys(state: Path) -> None:
    subprocess.run([PYTHON, "-m", "appliance", "audit", "init-keys", "--state-dir", str(state)], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)


def create_api_key(keys_file: Path) -> str | None:
    """An API key with the infer scope in ``keys_file`` (None when ``appliance keys`` is missing).

    The server turns authentication on when started with ``APPLIANCE_AUTH_API_KEYS_FILE`` set to it.
    """
    result = subprocess.run([PYTHON, "-m", "appliance", "keys", "create", "--name", "bench", "--scopes",
                             "infer,read", "--keys-file", str(keys_file)], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return result.stdout.splitlines()[0].strip()


@contextlib.contextmanager
def serve(models: Path, state: Path, *, env: dict[str, str] | None = None, cpus: str | None = None,
          log_file: Path | None = None, port: int | None = None, grpc_port: int = 0) -> Iterator[Server]:
    """Start ``appliance serve`` (optionally under ``taskset -c cpus``); stop it with SIGTERM.
    ``grpc_port`` 0 leaves gRPC off, so benches never contend for its default port."""
    port = port or free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    args = [PYTHON, "-m", "appliance", "serve", "--models", str(models), "--state-dir", str(state),
            "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)]
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]
    log = open(log_file or os.devnull, "ab")  # noqa: SIM115 - closed below
    started = time.monotonic()
    process = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=log, stderr=log)
    try:
        wait_ready(port, process)
        yield Server(process, port, started, time.monotonic() - started, state)
    finally:
        stop_process(process, 30)
        log.close()


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM (a server drains), then SIGKILL if it outlives ``grace_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- perf_analyzer ---------------------------------------------------------------------------
def perf_analyzer() -> str | None:
    """Path of the perf_analyzer wrapper (installs it on first use), or None if it cannot run."""
    wrapper = BENCH / ".venv-perf" / "bin" / "perf-analyzer-run"
    if wrapper.exists():
        return str(wrapper)
    result = subprocess.run(["bash", str(BENCH / "setup_perf_analyzer.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"perf_analyzer unavailable: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return result.stdout.strip().splitlines()[-1]


def write_input_data(path: Path, name: str, rows: np.ndarray, batch: int = 1, streams: int = 16) -> Path:
    """perf_analyzer ``--input-data`` JSON with finite values (its random data can hold NaN/Inf)."""
    data = []
    for i in range(streams):
        picked = rows[(i * batch) % len(rows):][:batch]
        if len(picked) < batch:
            picked = rows[:batch]
        data.append({name: {"content": picked.reshape(-1).tolist(), "shape": list(picked.shape[1:])}})
    path.write_text(json.dumps({"data": data}))
    return path


@dataclass
class PerfResult:
    concurrency: int
    throughput: float  # inferences/s as perf_analyzer counts them (requests × batch)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: str = ""


def run_perf(binary: str, port: int, model: str, input_data: Path, *, concurrency: int,
             tensor_format: str = "json", interval_ms: int = 3000, batch: int = 1, cpus: str | None = None,
             headers: dict[str, str] | None = None, shape: str | None = None,
             extra: tuple[str, ...] = (), timeout: float = 120.0, stability: int = 20,
             protocol: str = "http") -> PerfResult:
    """One perf_analyzer measurement (``protocol`` http or grpc; gRPC tensors are always binary);
    on a busy shared host an unstable one is retried with a looser stability criterion
    (perf_analyzer then reports the last windows' average)."""
    try:
        return _run_perf_once(binary, port, model, input_data, concurrency, tensor_format, interval_ms, batch,
                              cpus, headers, shape, extra, timeout, stability, protocol)
    except RuntimeError as exc:
        if "stable" not in str(exc):
            raise
        return _run_perf_once(binary, port, model, input_data, concurrency, tensor_format, interval_ms, batch,
                              cpus, headers, shape, extra, timeout, 1000, protocol)


def _run_perf_once(binary: str, port: int, model: str, input_data: Path, concurrency: int, tensor_format: str,
                   interval_ms: int, batch: int, cpus: str | None, headers: dict[str, str] | None,
                   shape: str | None, extra: tuple[str, ...], timeout: float, stability: int,
                   protocol: str = "http") -> PerfResult:
    with tempfile.TemporaryDirectory(prefix="pa-") as tmp:
        report = Path(tmp) / "report.csv"
        formats = ["-i", protocol] if protocol != "http" else [
            "-i", "http", "--input-tensor-format", tensor_format, "--output-tensor-format", tensor_format]
        # concurrency 0: open loop, the rate given in ``extra`` (``--request-rate-range R``)
        load = ["--concurrency-range", str(concurrency)] if concurrency > 0 else []
        args = [binary, "-m", model, "-u", f"127.0.0.1:{port}", *formats, "-b", str(batch),
                *load, "--measurement-interval", str(interval_ms),
                "--input-data", str(input_data), "--percentile", "99", "-f", str(report),
                "--max-trials", "5", "--stability-percentage", str(stability), *extra]
        if shape:
            args += ["--shape", shape]
        for key, value in (headers or {}).items():
            args += ["-H", f"{key}:{value}"]
        if cpus is not None:
            args = ["taskset", "-c", cpus, *args]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or not report.exists():
            raise RuntimeError(f"perf_analyzer failed ({result.returncode}): {result.stdout[-800:]}"
                               f"{result.stderr[-800:]}")
        with report.open() as f:
            row = next(csv.DictReader(f))
    us = ["p50 latency", "p90 latency", "p99 latency"]
    return PerfResult(concurrency, float(row["Inferences/Second"]), *(float(row[k]) / 1000 for k in us))
