"""``appliance models``: list, add and remove models and versions; verify files; encrypt a version.

``--models`` defaults to ``server.models`` of ``--config`` (or the built-in default). A running
server picks up an added version with ``POST /v2/repository/models/{m}/load`` (tritonclient's
``load_model``) or by itself with ``server.models_poll_interval_s``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any


def _repository_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, help="model repository (default: server.models)")
    parser.add_argument("--config", type=Path, help="appliance.toml")


def _add_hf_folder(args: argparse.Namespace, repository: Path, labels: list[str]) -> Path:
    """Export a Hugging Face folder to ONNX with the optimizer's exporter (the ``hf`` extra), then
    publish it like any ONNX file. Imported by name, as ``appliance.cli`` loads ``optimize``: the
    serving code never imports the optimizer."""
    import importlib
    import tempfile

    from appliance.lifecycle.intake import IntakeError, add_model

    try:
        exporter = importlib.import_module("optimizer.intake")
        exporter.export_folder  # noqa: B018 - the optimizer's own hf import is lazy: check it is whole
        importlib.import_module("optimum.exporters.onnx")
    except ModuleNotFoundError:
        raise IntakeError(f"{args.source} is a Hugging Face folder: exporting it needs the 'hf' extra "
                          "(pip install 'model-appliance[hf]')") from None
    with tempfile.TemporaryDirectory(prefix="appliance-add-") as work:
        try:
            exported = exporter.export_folder(args.source, Path(work))
        except exporter.OptimizerError as exc:
            raise IntakeError(str(exc)) from None
        return add_model(exported.onnx, repository, args.name, args.version, labels,
                         companions=exported.companions, manifest_extra=exported.manifest_extra,
                         origin=args.source, origin_sha256=exported.source_sha256)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="manage the model repository")
    sub = parser.add_subparsers(dest="models_command", required=True)
    listing = sub.add_parser("list", help="models, versions, formats, integrity and rollout state")
    _repository_args(listing)
    listing.add_argument("--state-dir", type=Path, help="state folder (server.state_dir): rollout state")
    listing.set_defaults(func=run_list)
    add = sub.add_parser("add", help="publish an ONNX file, an OpenVINO IR or a Hugging Face folder as a new version")
    add.add_argument("source", type=Path, help="model.onnx, model.xml beside model.bin, or a Hugging Face "
                     "model folder (exported to ONNX; needs the 'hf' extra)")
    add.add_argument("--name", required=True, help="model name (a folder of the repository)")
    add.add_argument("--version", type=int, help="version number (default: the next one)")
    add.add_argument("--labels", type=Path, help="class labels, one per line (new models)")
    _repository_args(add)
    add.set_defaults(func=run_add)
    remove = sub.add_parser("remove", help="remove a model or one version from the repository")
    remove.add_argument("target", metavar="NAME[/VERSION]")
    _repository_args(remove)
    remove.set_defaults(func=run_remove)
    encrypt = sub.add_parser("encrypt", help="seal a version's files with AES-256-GCM (decrypted only in memory)")
    encrypt.add_argument("target", metavar="NAME/VERSION")
    encrypt.add_argument("--models", type=Path, default=Path("models"))
    encrypt.add_argument("--key-file", type=Path, help="model key (created if absent; default: "
                         "auth.model_key_file, credential model.key or <state_dir>/keys/model.key)")
    encrypt.add_argument("--config", type=Path, help="appliance.toml")
    encrypt.add_argument("--state-dir", type=Path, help="state folder (server.state_dir)")
    encrypt.set_defaults(func=run_encrypt)


def _settings(args: argparse.Namespace) -> Any:
    from appliance.config import load_settings

    settings = load_settings(args.config)
    changes = {k: v for k, v in {"models": args.models,
                                 "state_dir": getattr(args, "state_dir", None)}.items() if v is not None}
    return settings.replace("server", **changes) if changes else settings


def run_list(args: argparse.Namespace) -> int:
    from appliance.lifecycle.rollout import RolloutStore
    from modelrepo import ManifestError, list_versions, read_manifest, verify_files

    settings = _settings(args)
    rollouts = RolloutStore(settings.server.state_dir / "rollouts.json").all()
    bad = 0
    for model_dir in sorted(p for p in settings.server.models.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rollout = rollouts.get(model_dir.name)
        for number in list_versions(model_dir):
            path = model_dir / str(number)
            role = ""
            if rollout is not None and number in (rollout.stable, rollout.candidate):
                role = f"\t{'stable' if number == rollout.stable else 'candidate'} ({rollout.mode}, {rollout.state})"
            try:
                manifest = read_manifest(path)
                problems = verify_files(path, manifest)
                state = "ok" if not problems else "TAMPERED: " + "; ".join(problems)
                print(f"{model_dir.name}/{number}\t{manifest.format}\t{manifest.precision}\t{state}{role}")
            except ManifestError as exc:
                problems = [str(exc)]
                print(f"{model_dir.name}/{number}\t?\t?\tINVALID: {exc}{role}")
            bad += bool(problems)
    return 1 if bad else 0


def run_add(args: argparse.Namespace) -> int:
    from appliance.audit.admin import record_admin_action
    from appliance.lifecycle.intake import IntakeError, add_model

    settings = _settings(args)
    labels = args.labels.read_text().split() if args.labels else []
    try:
        if args.source.is_dir() and (args.source / "config.json").is_file():
            published = _add_hf_folder(args, settings.server.models, labels)
        else:
            published = add_model(args.source, settings.server.models, args.name, args.version, labels)
    except IntakeError as exc:
        print(f"appliance: refused: {exc}", file=sys.stderr)
        return 2
    record_admin_action(settings, "model_add", f"{args.source} -> {published}", model=args.name,
                        version=published.name)
    print(f"published {args.name}/{published.name}; load it with POST /v2/repository/models/{args.name}/load")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from appliance.audit.admin import record_admin_action
    from appliance.lifecycle.rollout import RolloutStore

    settings = _settings(args)
    name, _, version = args.target.partition("/")
    target = settings.server.models / name / version if version else settings.server.models / name
    if not name or name.startswith(".") or not target.is_dir() or (version and not version.isdigit()):
        print(f"appliance: no {args.target} in {settings.server.models}", file=sys.stderr)
        return 2
    rollout = RolloutStore(settings.server.state_dir / "rollouts.json").get(name)
    if rollout is not None and (not version or int(version) in (rollout.stable, rollout.candidate)):
        print(f"appliance: refused: {args.target} is part of a rollout; end it first "
              f"(appliance rollout rollback/promote {name})", file=sys.stderr)
        return 2
    # Renamed away first (one atomic step), so a server never sees half a folder.
    hidden = target.with_name(f".removed-{target.name}")
    target.rename(hidden)
    shutil.rmtree(hidden)
    record_admin_action(settings, "model_remove", f"removed {args.target}", model=name, version=version)
    print(f"removed {args.target}; a running server stops serving it at its next load of '{name}'")
    return 0


def run_encrypt(args: argparse.Namespace) -> int:
    from appliance.artifacts import encrypt_command

    return encrypt_command(args.models, args.target, args.key_file, args.config, args.state_dir)
