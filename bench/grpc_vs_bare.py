"""gRPC bench (issue 17): the appliance's gRPC endpoint against a bare ``grpc.aio`` servicer running
the same model inline (``bare_grpc_server.py``), unary and streaming, and REST vs gRPC side by side.

    python bench/grpc_vs_bare.py [--concurrency 1,16,64] [--interval-ms 2000] [--json FILE]

One run, the server pinned to core 0 (``taskset -c 0``), perf_analyzer on core 1, the bundled
``digits`` model (FP32 ONNX, ONNX Runtime), one row per request. The appliance runs as shipped but
for: admission fixed and wide (``APPLIANCE_LIMITS_ADAPTIVE=false``,
``APPLIANCE_LIMITS_MAX_CONCURRENCY=1024``) so every client of these fixed-concurrency runs is let
in; no credentials; audit off; the prediction cache off in model.toml (perf_analyzer cycles over 16
inputs, which the cache would otherwise answer). "cpu µs/req" is the server process's CPU time per
answered request (steadier than req/s on a shared host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b

SERVER_CPU, CLIENT_CPU = "0", "1"
ENV = {"APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_LIMITS_MAX_CONCURRENCY": "1024",
       "APPLIANCE_AUDIT_ENABLED": "false", "APPLIANCE_AUTH_ENABLED": "false"}


@dataclass
class Row:
    server: str
    mode: str
    concurrency: int
    req_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float


def wait_grpc_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    from appliance.grpc.protos import grpc_service_pb2 as pb

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                    request_serializer=pb.ServerReadyRequest.SerializeToString,
                                    response_deserializer=pb.ServerReadyResponse.FromString)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            with contextlib.suppress(grpc.RpcError):
                if ready(pb.ServerReadyRequest(), timeout=1).ready:
                    return
            time.sleep(0.05)
    raise TimeoutError("gRPC server not ready in time")


@contextlib.contextmanager
def bare(models: Path) -> Iterator[tuple[int, int]]:
    """(gRPC port, pid) of the bare servicer on the server core."""
    port = b.free_port()
    args = ["taskset", "-c", SERVER_CPU, b.PYTHON, str(b.BENCH / "bare_grpc_server.py"),
            str(models / "digits" / "1" / "model.onnx"), str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_grpc_ready(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def appliance(models: Path, state: Path) -> Iterator[tuple[int, int, int]]:
    """(gRPC port, REST port, pid) of ``appliance serve`` on the server core."""
    grpc_port = b.free_port()
    with b.serve(models, state, env=ENV, cpus=SERVER_CPU, grpc_port=grpc_port) as server:
        wait_grpc_ready(grpc_port, server.process)
        yield grpc_port, server.port, server.pid


def measure(pa: str, pid: int, port: int, data: Path, concurrency: int, interval_ms: int, protocol: str,
            streaming: bool) -> tuple[b.PerfResult, float]:
    process = psutil.Process(pid)
    before, started = process.cpu_times(), time.monotonic()
    result = b.run_perf(pa, port, "digits", data, concurrency=concurrency, interval_ms=interval_ms,
                        tensor_format="binary", cpus=CLIENT_CPU, protocol=protocol,
                        extra=("--streaming",) if streaming else ())
    after, wall = process.cpu_times(), time.monotonic() - started
    cpu = (after.user + after.system) - (before.user + before.system)
    return result, cpu / max(1e-9, result.throughput * wall) * 1e6


def run(concurrencies: list[int], interval_ms: int) -> list[Row]:
    pa = b.perf_analyzer()
    if pa is None:
        raise SystemExit("perf_analyzer is not available (bench/setup_perf_analyzer.sh)")
    source = b.bundled_models()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        models = b.copy_repository(source, Path(tmp) / "models")
        b.set_toml_section(models / "digits" / "model.toml", "cache", "enabled = false")
        data = b.write_input_data(Path(tmp) / "data.json", "input", b.digits_rows(models))

        def add(server: str, mode: str, pid: int, port: int, protocol: str, streaming: bool) -> None:
            for c in concurrencies:
                result, cpu = measure(pa, pid, port, data, c, interval_ms, protocol, streaming)
                rows.append(Row(server, mode, c, result.throughput, result.p50_ms, result.p99_ms, cpu))
                print(f"{server:9} {mode:14} c={c:<3} {result.throughput:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                      f"p99 {result.p99_ms:6.2f} ms  {cpu:6.0f} cpu µs/req", file=sys.stderr)

        with bare(models) as (port, pid):
            add("bare", "gRPC", pid, port, "grpc", False)
            add("bare", "gRPC stream", pid, port, "grpc", True)
        with appliance(models, Path(tmp) / "state") as (grpc_port, rest_port, pid):
            add("appliance", "gRPC", pid, grpc_port, "grpc", False)
            add("appliance", "gRPC stream", pid, grpc_port, "grpc", True)
            add("appliance", "REST binary", pid, rest_port, "http", False)
    return rows


def table(rows: list[Row]) -> str:
    def find(server: str, mode: str, c: int) -> Row | None:
        return next((r for r in rows if (r.server, r.mode, r.concurrency) == (server, mode, c)), None)

    lines = ["| c | bare gRPC | appliance gRPC | ratio | bare stream | appliance stream | ratio | appliance REST "
             "binary | cpu µs/req bare / gRPC / stream / REST |", "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted({r.concurrency for r in rows}):
        cells = [find("bare", "gRPC", c), find("appliance", "gRPC", c), find("bare", "gRPC stream", c),
                 find("appliance", "gRPC stream", c), find("appliance", "REST binary", c)]
        if any(cell is None for cell in cells):
            continue
        bg, ag, bs, ast, rest = (cell for cell in cells if cell is not None)
        lines.append(f"| {c} | {bg.req_s:.0f} | {ag.req_s:.0f} (p99 {ag.p99_ms:.1f} ms) | {ag.req_s / bg.req_s:.2f}× "
                     f"| {bs.req_s:.0f} | {ast.req_s:.0f} | {ast.req_s / bs.req_s:.2f}× | {rest.req_s:.0f} "
                     f"| {bg.cpu_us_per_req:.0f} / {ag.cpu_us_per_req:.0f} / {ast.cpu_us_per_req:.0f} / "
                     f"{rest.cpu_us_per_req:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = run([int(c) for c in args.concurrency.split(",")], args.interval_ms)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
