"""``appliance batch run``: score a file or folder with one model version, resumably.

The job runs in this process on the same parts the server is built from (``build_parts``), with
only its own model loaded: the same model resolution, runtime, batcher and audit log (one
``batch_job`` record, appended to the server's log like every CLI action).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from pathlib import Path
from typing import Any

from appliance.config import ConfigError, Settings, load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("batch", help="batch prediction over files (resumable)")
    sub = parser.add_subparsers(dest="batch_command", required=True)
    run_parser = sub.add_parser("run", help="score a Parquet/CSV/JSON-lines/.npy/.npz file or folder")
    run_parser.add_argument("--model", required=True, metavar="NAME[:VERSION]",
                            help="model, optionally pinned to a version (default: its serving version)")
    run_parser.add_argument("--input", required=True, type=Path, help="input file or folder")
    run_parser.add_argument("--output", required=True, type=Path, help="output folder (Parquet parts)")
    run_parser.add_argument("--input-columns", nargs="+", default=[], metavar="COLUMN",
                            help="scalar feature columns, in the model's order (default: by input name, "
                                 "else every column)")
    run_parser.add_argument("--batch-size", type=int, default=0, help="rows per request (default: the "
                            "model's max_batch_size)")
    run_parser.add_argument("--chunk-rows", type=int, help="rows per committed chunk (jobs.chunk_rows)")
    run_parser.add_argument("--top-k", type=int, default=0, help="add the top-k labels of a classifier")
    run_parser.add_argument("--resume", action="store_true", help="continue the job in --output")
    run_parser.add_argument("--strict", action="store_true", help="stop at the first bad row")
    run_parser.add_argument("--allow-nan", action="store_true", help="pass NaN/infinite values to the model")
    run_parser.add_argument("--config", type=Path, help="appliance.toml")
    run_parser.add_argument("--models", type=Path, help="model repository (server.models)")
    run_parser.add_argument("--state-dir", type=Path, help="state folder (server.state_dir): audit log, keys")
    run_parser.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto")
    run_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.jobs.runner import JobSpec

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    name, _, version = args.model.partition(":")
    spec = JobSpec(name, version or None, args.input, args.output, tuple(args.input_columns), args.batch_size,
                   args.chunk_rows or settings.jobs.chunk_rows, args.resume, args.strict, args.allow_nan,
                   args.top_k, settings.jobs.in_flight)
    interactive = {"auto": None, "bar": True, "lines": False}[args.progress]
    return asyncio.run(run_job(settings, spec, f"cli:{getpass.getuser()}", interactive))


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    changes = {k: v for k, v in {"models": args.models, "state_dir": args.state_dir}.items() if v is not None}
    return settings.replace("server", **changes) if changes else settings


async def run_job(settings: Settings, spec: Any, principal: str, interactive: bool | None) -> int:
    """Build the parts with only ``spec.model`` loaded, run the job, audit it; the exit code."""
    from appliance.errors import ApplianceError
    from appliance.jobs.features import FeatureError
    from appliance.jobs.output import OutputError
    from appliance.jobs.progress import ProgressReporter
    from appliance.jobs.readers import InputError
    from appliance.jobs.runner import JobFailed, JobRunner, JobStatus
    from appliance.parts import build_parts

    parts = build_parts(settings)
    try:
        try:
            await asyncio.to_thread(parts.repository.load_one, spec.model)
        except ApplianceError as exc:
            print(f"appliance: batch job failed: {exc}", file=sys.stderr)
            return 1
        status = JobStatus(uuid.uuid4().hex[:12], spec.model, principal)
        reporter = ProgressReporter(f"{spec.model} batch", interactive)
        runner = JobRunner(parts.service, spec, status, reporter)
        try:
            await runner.run()
        except (ApplianceError, FeatureError, OutputError, InputError, JobFailed, OSError) as exc:
            print(f"appliance: batch job failed: {exc}", file=sys.stderr)
        finally:
            reporter.close(status)
            if runner.target is not None:
                parts.audit_log.append_nowait(runner.audit_record())
        return 0 if status.state == "done" else 1
    finally:
        await asyncio.to_thread(parts.repository.close)
        await parts.audit_log.aclose()
