"""Served vs raw, and the edge footprint (issue 2), in one run on 127.0.0.1.

    python bench/serve_vs_raw.py [--interval-ms 3000] [--json FILE]

- start-up: seconds from process start to ``/v2/health/ready`` = 200, cold (empty compiled-model
  cache) and warm (a restart on the same state folder);
- resident memory (RSS and USS) with the bundled models loaded, and idle CPU over 5 s;
- installed size: the files of ``model-appliance``'s serving dependencies (what install.sh puts in
  its venv, no extras), and ``du`` of this interpreter's whole venv for reference;
- throughput: perf_analyzer at concurrency 1 and 16 (JSON, ``Cache-Control: no-cache`` so every
  request runs the model) against raw in-process inference of the same version, loaded the way the
  server loads it: sequential batch-1 calls, and batch-16 calls (the ceiling batching can reach).

The server runs with the installed defaults: strict audit (keys generated), cache, batching,
metrics, request log; both cores, perf_analyzer beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b

PEERS = {"KServe (Python)": (2.5, 181), "Triton 2.51": (3.6, 190), "MLServer": (4.6, 352)}


def _served_version(port: int) -> str:
    status, body = b.http_get(f"http://127.0.0.1:{port}/v2/models/digits")
    return str(json.loads(body)["versions"][-1]) if status == 200 else "1"


def footprint(server: b.Server) -> dict[str, Any]:
    process = psutil.Process(server.pid)
    memory = process.memory_full_info()
    before = process.cpu_times()
    time.sleep(5.0)
    after = process.cpu_times()
    idle = ((after.user + after.system) - (before.user + before.system)) / 5.0 * 100
    return {"rss_mib": round(memory.rss / 2**20, 1), "uss_mib": round(memory.uss / 2**20, 1),
            "idle_cpu_percent_of_one_core": round(idle, 2), "threads": process.num_threads()}


def installed_size() -> dict[str, Any]:
    """Bytes of the serving dependency closure of model-appliance (no extras), and du of the venv."""
    seen: set[str] = set()
    todo = ["model-appliance"]
    total = 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in dist.files or [])
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0]
                        .split("!")[0].split("~")[0].strip())
    du = subprocess.run(["du", "-sm", sys.prefix], capture_output=True, text=True).stdout.split()[0]
    return {"serving_closure_mib": round(total / 2**20, 1), "packages": len(seen), "venv_du_mib": int(du),
            "venv": sys.prefix}


def raw_throughput(model_path: Path, artifact_format: str, precision: str, seconds: float = 4.0) -> dict[str, float]:
    """The same version, compiled by the server's own loader, called in-process."""
    from appliance.runtimes import load_model

    model = load_model(model_path, artifact_format=artifact_format, precision=precision, runtime="auto",
                       device="CPU")
    rows = b.digits_rows(b.bundled_models(fp32_only=False), 16)
    name = model.inputs[0].name
    out = {}
    for batch in (1, 16):
        x = {name: rows[:batch]}
        for _ in range(20):
            model.infer(x)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.infer(x)
            count += 1
        out[f"raw_batch{batch}_rows_s"] = round(count * batch / (time.perf_counter() - start), 1)
    model.close()
    return out


def served(pa: str, server: b.Server, data: Path, interval_ms: int) -> dict[str, Any]:
    out = {}
    for concurrency in (1, 16):
        result = b.run_perf(pa, server.port, "digits", data, concurrency=concurrency, interval_ms=interval_ms,
                            headers={"Cache-Control": "no-cache"})
        out[f"served_c{concurrency}"] = {"req_s": round(result.throughput, 1), "p50_ms": result.p50_ms,
                                         "p99_ms": result.p99_ms}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pa = b.perf_analyzer()
    models = b.bundled_models(fp32_only=False)
    report: dict[str, Any] = {"installed": installed_size()}
    with tempfile.TemporaryDirectory(prefix="bench-svr-") as tmp:
        work = Path(tmp)
        repo = b.copy_repository(models, work / "models")
        state = work / "state"
        state.mkdir()
        b.init_audit_keys(state)
        data = b.write_input_data(work / "rows.json", "input", b.digits_rows(models), streams=256)
        with b.serve(repo, state, log_file=state / "cold.log") as server:
            report["ready_cold_s"] = round(server.ready_s, 2)
        with b.serve(repo, state, log_file=state / "warm.log") as server:
            report["ready_warm_s"] = round(server.ready_s, 2)
            report["footprint"] = footprint(server)
            version = _served_version(server.port)
            if pa is not None:
                report.update(served(pa, server, data, args.interval_ms))
        manifest = json.loads((repo / "digits" / version / "manifest.json").read_text())
        report["version"] = {"number": version, "format": manifest["format"], "precision": manifest["precision"]}
        report.update(raw_throughput(repo / "digits" / version / manifest["model_file"], manifest["format"],
                                     manifest["precision"]))
    return report


def render(report: dict[str, Any]) -> str:
    f, inst = report["footprint"], report["installed"]
    lines = [f"ready: cold {report['ready_cold_s']} s, warm restart {report['ready_warm_s']} s; "
             f"RSS {f['rss_mib']} MiB (USS {f['uss_mib']}); idle CPU {f['idle_cpu_percent_of_one_core']} % "
             f"of one core; installed serving closure {inst['serving_closure_mib']} MiB "
             f"({inst['packages']} packages; this venv: {inst['venv_du_mib']} MiB)"]
    for peer, (ready, rss) in PEERS.items():
        lines.append(f"  peer {peer:18} ready {ready} s, RSS {rss} MiB")
    v = report["version"]
    lines.append(f"digits version {v['number']} ({v['format']}, {v['precision']}):")
    for c in (1, 16):
        s = report.get(f"served_c{c}")
        if s:
            lines.append(f"  served c={c:<2}  {s['req_s']:8.0f} req/s  "
                         f"p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms")
    lines.append(f"  raw batch 1  {report['raw_batch1_rows_s']:8.0f} rows/s   raw batch 16 "
                 f"{report['raw_batch16_rows_s']:8.0f} rows/s")
    if report.get("served_c1"):
        lines.append(f"  served c=1 / raw batch 1 = {report['served_c1']['req_s'] / report['raw_batch1_rows_s']:.3f}; "
                     f"served c=16 / raw batch 16 = "
                     f"{report['served_c16']['req_s'] / report['raw_batch16_rows_s']:.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = run(args)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
