"""Serving-engine bench (issue 4): what each stage of the request path costs, served vs raw on a
compute-heavy INT8 model, and overload behaviour. Everything targets 127.0.0.1 only.

    python bench/serving_engine.py [--parts a,b,c] [--interval-ms 3000] [--json FILE]

(a) ResNet-50-sized CNN, INT8 (NNCF), served with binary tensors at concurrency 8 by perf_analyzer
    vs raw in-process throughput of the same IR compiled the way the server compiles it.
(b) bundled ``digits`` model, JSON, concurrency 16, server pinned to core 0 (``taskset -c 0``),
    perf_analyzer on core 1: every stage on (API-key auth, strict audit, cache, batching, metrics,
    request log, prediction-quality signals), for cache misses and cache hits, then one stage off
    at a time (and the audit log in relaxed mode), and a bare aiohttp + uvloop + orjson + ONNX
    Runtime handler as the floor. ``--rounds N`` measures the whole list N times in turn and
    reports each configuration's median.
    "cpu µs/req" is the server process's CPU time per answered request: on a shared host it is
    steadier than requests/s, and 1e6 / it is what one uncontended core could serve.
(c) overload at 10× the admission capacity (``bench/loadgen.py``, closed loop): share of 429s,
    p99 of admitted requests vs an unloaded p99, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b

SERVER_CPU, CLIENT_CPU = "0", "1"


@dataclass
class Row:
    config: str
    req_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    core_busy: float  # server CPU seconds per wall second (1.0 = the pinned core is saturated)
    note: str = ""


def _measure(pa: str, server_pid: int, port: int, data: Path, *, model: str = "digits", concurrency: int = 16,
             interval_ms: int, tensor_format: str = "json", headers: dict[str, str] | None = None,
             client_cpus: str | None = CLIENT_CPU, shape: str | None = None) -> tuple[b.PerfResult, float, float]:
    process = psutil.Process(server_pid)
    before, started = process.cpu_times(), time.monotonic()
    result = b.run_perf(pa, port, model, data, concurrency=concurrency, tensor_format=tensor_format,
                        interval_ms=interval_ms, headers=headers, cpus=client_cpus, shape=shape)
    after, wall = process.cpu_times(), time.monotonic() - started
    cpu = (after.user + after.system) - (before.user + before.system)
    return result, cpu / max(1e-9, result.throughput * wall) * 1e6, cpu / wall


# --- (b) the stages of the request path -----------------------------------------------------
STAGES: dict[str, dict[str, Any]] = {
    "all stages, cache miss": {},
    "all stages, cache hit": {"hit": True},
    "- auth": {"auth": False},
    "- audit": {"env": {"APPLIANCE_AUDIT_ENABLED": "false"}},
    "audit relaxed (written after the answer)": {"env": {"APPLIANCE_AUDIT_MODE": "relaxed"}},
    "- batching": {"env": {"APPLIANCE_BATCHING_ENABLED": "false"}},
    "- cache (disabled in model.toml)": {"cache": False},
    "- request log": {"env": {"APPLIANCE_OBSERVABILITY_REQUEST_LOG": "false"}},
    "- prediction quality": {"env": {"APPLIANCE_OBSERVABILITY_PREDICTION_QUALITY": "false"}},
    "all stages, cache miss (again)": {},
}


def _stage_server(work: Path, models: Path, name: str, spec: dict[str, Any]) -> tuple[Path, Path, dict[str, str]]:
    """A fresh repository and state folder for one configuration."""
    repo = b.copy_repository(models, work / name.replace(" ", "_").replace(",", "") / "models")
    state = repo.parent / "state"
    state.mkdir(exist_ok=True)
    b.set_toml_section(repo / "digits" / "model.toml", "cache", f"enabled = {str(spec.get('cache', True)).lower()}")
    env = {"APPLIANCE_CACHE_MAX_BYTES": "100000000" if spec.get("hit") else "2048",  # 2 KiB: every lookup misses
           **spec.get("env", {})}
    if env.get("APPLIANCE_AUDIT_ENABLED") != "false":
        b.init_audit_keys(state)
    return repo, state, env


def part_b(pa: str, models: Path, work: Path, interval_ms: int, stages: list[str] | None = None,
           concurrency: int = 16, rounds: int = 1) -> list[Row]:
    """Every configuration of STAGES (or only ``stages``, then without the bare floor).

    With ``rounds`` > 1 the whole list is measured that many times in turn and each configuration
    reports the median of its rounds (field by field): the host's speed drifts between minutes, and
    alternating spreads that drift over every configuration alike."""
    rows_data = b.digits_rows(models, 256)
    many = b.write_input_data(work / "many.json", "input", rows_data, streams=256)
    one = b.write_input_data(work / "one.json", "input", rows_data[:1], streams=1)
    key_file = work / "api-keys.json"
    token = b.create_api_key(key_file)
    measured: dict[str, list[Row]] = {}
    for index in range(rounds):
        if rounds > 1:
            print(f"-- round {index + 1} of {rounds}", flush=True)
        if not stages:
            measured.setdefault(_BARE, []).append(_bare(pa, models, work, many, interval_ms))
        for name, spec in STAGES.items():
            if stages and name not in stages:
                continue
            repo, state, env = _stage_server(work / f"round-{index}", models, name, spec)
            headers = None
            if token and spec.get("auth", True):
                env["APPLIANCE_AUTH_API_KEYS_FILE"] = str(key_file)
                headers = {"X-API-Key": token}
            with b.serve(repo, state, env=env, cpus=SERVER_CPU, log_file=state / "server.log") as server:
                data = one if spec.get("hit") else many
                result, cpu_us, busy = _measure(pa, server.pid, server.port, data, interval_ms=interval_ms,
                                                headers=headers, concurrency=concurrency)
                note = _cache_note(server.port, headers)
            row = Row(name, result.throughput, result.p50_ms, result.p99_ms, cpu_us, busy, note)
            measured.setdefault(name, []).append(row)
            print(_format(row), flush=True)
    results = [_median_row(rows) for rows in measured.values()]
    if rounds > 1:
        print(f"-- median of {rounds} rounds", flush=True)
        for row in results:
            print(_format(row), flush=True)
    if not token:
        results.append(Row("(auth: `appliance keys create` unavailable — measured without auth)", 0, 0, 0, 0, 0))
    return results


_BARE = "bare aiohttp+uvloop+orjson+ORT (floor)"


def _median_row(rows: list[Row]) -> Row:
    if len(rows) == 1:
        return rows[0]

    def median(field: str) -> float:
        return float(np.median([getattr(r, field) for r in rows]))

    spread = f"req/s {min(r.req_s for r in rows):.0f}–{max(r.req_s for r in rows):.0f}"
    return Row(rows[0].config, median("req_s"), median("p50_ms"), median("p99_ms"), median("cpu_us_per_req"),
               median("core_busy"), f"median of {len(rows)}, {spread}; {rows[-1].note}")


def _bare(pa: str, models: Path, work: Path, data: Path, interval_ms: int) -> Row:
    port = b.free_port()
    args = ["taskset", "-c", SERVER_CPU, b.PYTHON, str(b.BENCH / "bare_server.py"),
            str(models / "digits" / "1" / "model.onnx"), str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        b.wait_ready(port, process)
        result, cpu_us, busy = _measure(pa, process.pid, port, data, interval_ms=interval_ms)
    finally:
        process.terminate()
        process.wait(10)
    row = Row(_BARE, result.throughput, result.p50_ms, result.p99_ms, cpu_us, busy)
    print(_format(row), flush=True)
    return row


def _cache_note(port: int, headers: dict[str, str] | None) -> str:
    samples = b.scrape(port, headers)
    if not samples:
        return ""
    hits = b.metric_total(samples, "appliance_cache_lookups_total", result="hit")
    misses = b.metric_total(samples, "appliance_cache_lookups_total", result="miss")
    note = f"hits {hits:.0f} / misses {misses:.0f}" + _mean_batch(samples, "digits", "; ")
    records = b.metric_total(samples, "appliance_audit_records_written_total")
    commits = b.metric_total(samples, "appliance_audit_commits_total")
    return note + (f"; {records / commits:.1f} audit records per commit" if commits else "")


def _format(row: Row) -> str:
    return (f"{row.config:42} {row.req_s:8.0f} req/s  p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:6.2f} ms  "
            f"{row.cpu_us_per_req:6.0f} cpu µs/req  core {row.core_busy:4.2f}  {row.note}")


# --- (a) compute-heavy INT8 model: served vs raw --------------------------------------------
def part_a(pa: str, work: Path, interval_ms: int, concurrency: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Raw and served alternate (raw, served, raw, ... raw): on a shared VM the CPU's speed drifts
    by ±20 % within minutes, so each served round is compared with the raw rounds either side of
    it, and the ratio reported is the median of those per-round ratios."""
    repo, state, ir = _publish_resnet_int8(work)
    image = np.random.default_rng(2).normal(0, 1, (4, 3, 224, 224)).astype(np.float32)
    data = b.write_input_data(work / "images.json", "input", image, streams=4)
    env = {"APPLIANCE_AUDIT_ENABLED": "false"}
    raws = [_raw_throughput(ir, seconds=8)]
    served: list[b.PerfResult] = []
    notes = []
    print(f"raw in-process: {raws[-1]:.1f} img/s", flush=True)
    for index in range(rounds):
        round_state = state / f"round-{index}"
        round_state.mkdir(parents=True)
        with b.serve(repo, round_state, env=env, log_file=round_state / "server.log") as server:
            result, _cpu_us, _busy = _measure(pa, server.pid, server.port, data, model="resnet",
                                              concurrency=concurrency, interval_ms=max(interval_ms, 5000),
                                              tensor_format="binary", client_cpus=None)
            notes.append(_batch_note(server.port, "resnet"))
        served.append(result)
        raws.append(_raw_throughput(ir, seconds=8))
        ratio = result.throughput / ((raws[-2] + raws[-1]) / 2)
        print(f"served c={concurrency} binary: {result.throughput:.1f} img/s (p50 {result.p50_ms:.1f} ms, "
              f"p99 {result.p99_ms:.1f} ms) {notes[-1]}; raw either side {raws[-2]:.1f}/{raws[-1]:.1f} img/s; "
              f"ratio {ratio:.2f}", flush=True)
    ratios = [r.throughput / ((raws[i] + raws[i + 1]) / 2) for i, r in enumerate(served)]
    best = served[ratios.index(sorted(ratios)[len(ratios) // 2])]
    out = {"served_img_s": [r.throughput for r in served], "served_p50_ms": best.p50_ms, "served_p99_ms": best.p99_ms,
           "raw_img_s": raws, "ratios": ratios, "ratio": sorted(ratios)[len(ratios) // 2],
           "concurrency": concurrency, "batching": notes}
    print(f"served / raw, median of {rounds} alternating rounds: {out['ratio']:.2f} "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    return out


def _batch_note(port: int, model: str) -> str:
    return _mean_batch(b.scrape(port), model)


def _mean_batch(samples: list[Any], model: str, prefix: str = "") -> str:
    count = b.metric_total(samples, "appliance_batch_size_count", model=model)
    rows = b.metric_total(samples, "appliance_batch_size_sum", model=model)
    return f"{prefix}mean batch {rows / count:.2f}" if count else ""


def _publish_resnet_int8(work: Path) -> tuple[Path, Path, Path]:
    import os

    os.environ.setdefault("NNCF_CI", "1")
    from int8_vs_fp32 import calibration_batches, openvino_int8, resnet50_like

    from modelrepo import Manifest, publish_version, staging_directory

    repo, state = work / "resnet-models", work / "resnet-state"
    state.mkdir(parents=True)
    model_dir = repo / "resnet"
    model_dir.mkdir(parents=True)
    started = time.monotonic()
    fp32 = resnet50_like(work / "resnet50_like.onnx")
    ir = openvino_int8(fp32, calibration_batches(4), work)
    print(f"built and quantized the ResNet-50-sized CNN in {time.monotonic() - started:.0f} s", flush=True)
    (model_dir / "model.toml").write_text("max_batch_size = 8\n")
    with staging_directory(model_dir) as staging:
        for suffix in (".xml", ".bin"):
            (staging / f"model{suffix}").write_bytes(ir.with_suffix(suffix).read_bytes())
        Manifest.for_directory(staging, format="openvino", precision="int8", model_file="model.xml").write(staging)
        version = publish_version(model_dir, staging)
    return repo, state, version / "model.xml"


def _raw_throughput(ir: Path, seconds: float) -> float:
    """In-process, batch 1, every slot of the compiled model kept busy (as the server compiles it)."""
    code = f"""
import sys, time, threading, numpy as np
sys.path.insert(0, {str(b.ROOT)!r})
from pathlib import Path
from appliance.runtimes import load_model
m = load_model(Path({str(ir)!r}), artifact_format="openvino", precision="int8", runtime="openvino", device="CPU")
x = {{"input": np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)}}
for _ in range(4): m.infer(x)
# Never restart from the callback: OpenVINO's queue waits for that very request to go idle.
free = threading.Semaphore(m.slots); done = [0]
def finished(result):
    done[0] += 1; free.release()
t0 = time.monotonic(); stop = t0 + {seconds}
while time.monotonic() < stop:
    free.acquire(); m.start(x, finished)
for _ in range(m.slots): free.acquire()
rate = done[0] / (time.monotonic() - t0)
m.close(); print(rate, flush=True)
import os; os._exit(0)  # skip interpreter teardown racing OpenVINO's callback threads
"""
    result = subprocess.run([b.PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"raw measurement failed ({result.returncode}): {result.stderr[-1500:]}")
    return float(result.stdout.strip().splitlines()[-1])


# --- (c) overload ------------------------------------------------------------------------------
def part_c(models: Path, work: Path, seconds: float, in_flight: int = 8, queue: int = 8) -> dict[str, Any]:
    import asyncio

    from loadgen import json_bodies, run_load

    capacity = in_flight + queue
    print(f"(c) admission {in_flight}+{queue}", flush=True)
    repo = b.copy_repository(models, work / "overload" / "models")
    state = repo.parent / "state"
    state.mkdir()
    b.init_audit_keys(state)
    toml = repo / "digits" / "model.toml"
    b.set_toml_section(toml, "limits", f"max_concurrency = {in_flight}\nmax_queue = {queue}")
    b.set_toml_section(toml, "cache", "enabled = false")  # every admitted request reaches the runtime
    bodies = json_bodies(b.digits_rows(models, 256))
    url_of = "http://127.0.0.1:{}/v2/models/digits/infer".format
    out: dict[str, Any] = {"admission": f"max_concurrency {in_flight} + max_queue {queue}"}
    with b.serve(repo, state, cpus=SERVER_CPU, log_file=state / "server.log") as server:
        process = psutil.Process(server.pid)
        for label, concurrency in (("unloaded c=1", 1), (f"at capacity c={capacity}", capacity),
                                   (f"overload c={capacity * 10} (10x)", capacity * 10)):
            peak = _PeakRss(process)
            with peak:
                result = _client(asyncio, run_load, url_of(server.port), bodies, concurrency, seconds)
            out[label] = {**result.summary(), "peak_rss_mib": round(peak.peak / 2**20, 1)}
            print(f"{label:24} {json.dumps(out[label])}", flush=True)
        paced = b.metric_total(b.scrape(server.port), "appliance_refusals_paced_total")
    flood = out[f"overload c={capacity * 10} (10x)"]["ok_p99_ms"]
    out["admitted p99 / unloaded p99"] = {"vs c=1": round(flood / out["unloaded c=1"]["ok_p99_ms"], 2),
                                          f"vs c={capacity} (at capacity, no flood)":
                                          round(flood / out[f"at capacity c={capacity}"]["ok_p99_ms"], 2)}
    out["refusals paced"] = paced
    print(f"admitted p99 under the flood / unloaded p99: {json.dumps(out['admitted p99 / unloaded p99'])}; "
          f"{paced:.0f} refusals paced", flush=True)
    return out


def _client(asyncio: Any, run_load: Any, url: str, bodies: list[bytes], concurrency: int, seconds: float) -> Any:
    """Run the load generator pinned to the client core (as perf_analyzer is)."""
    psutil.Process().cpu_affinity([int(CLIENT_CPU)])
    try:
        import uvloop

        return uvloop.run(run_load(url, bodies, concurrency=concurrency, seconds=seconds))
    except ImportError:
        return asyncio.run(run_load(url, bodies, concurrency=concurrency, seconds=seconds))


class _PeakRss:
    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak = process, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="b,a,c", help="comma-separated: a, b, c")
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    parser.add_argument("--overload-seconds", type=float, default=8.0)
    parser.add_argument("--stages", help="(b): only these configurations of STAGES, names separated by ';'")
    parser.add_argument("--concurrency", type=int, default=16, help="(b): closed-loop concurrency")
    parser.add_argument("--rounds", type=int, default=1,
                        help="(b): measure every configuration this many times in turn, report medians")
    parser.add_argument("--admission", default="8+8,2+0",
                        help="admission settings for (c), IN_FLIGHT+QUEUE each (2+0: what one core runs at once)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    pa = b.perf_analyzer()
    if pa is None:
        return 1
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        models = b.bundled_models()
        if "b" in parts:
            print(f"(b) bundled digits model, JSON, c={args.concurrency}, server on core 0, perf_analyzer on core 1",
                  flush=True)
            report["b"] = [asdict(r) for r in part_b(pa, models, work, args.interval_ms,
                                                        args.stages.split(";") if args.stages else None,
                                                        args.concurrency, args.rounds)]
        if "a" in parts:
            print("(a) ResNet-50-sized INT8 CNN, binary tensors: served vs raw in-process", flush=True)
            report["a"] = part_a(pa, work, args.interval_ms)
        if "c" in parts:
            print("(c) overload (loadgen.py, closed loop), server on core 0", flush=True)
            report["c"] = {}
            for spec in args.admission.split(","):
                in_flight, queue = (int(n) for n in spec.split("+"))
                report["c"][spec] = part_c(models, work / f"admission-{in_flight}-{queue}", args.overload_seconds,
                                           in_flight, queue)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
