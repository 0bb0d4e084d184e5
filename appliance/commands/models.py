"""``appliance models``: list the repository and verify every version's files against its manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="inspect the model repository")
    sub = parser.add_subparsers(dest="models_command", required=True)
    listing = sub.add_parser("list", help="models, versions, formats and integrity")
    listing.add_argument("--models", type=Path, default=Path("models"))
    listing.set_defaults(func=run_list)
    encrypt = sub.add_parser("encrypt", help="seal a version's files with AES-256-GCM (decrypted only in memory)")
    encrypt.add_argument("target", metavar="NAME/VERSION")
    encrypt.add_argument("--models", type=Path, default=Path("models"))
    encrypt.add_argument("--key-file", type=Path, help="model key (created if absent; default: "
                         "auth.model_key_file, credential model.key or <state_dir>/keys/model.key)")
    encrypt.add_argument("--config", type=Path, help="appliance.toml")
    encrypt.add_argument("--state-dir", type=Path, help="state folder (server.state_dir)")
    encrypt.set_defaults(func=run_encrypt)


def run_list(args: argparse.Namespace) -> int:
    from modelrepo import ManifestError, list_versions, read_manifest, verify_files

    bad = 0
    for model_dir in sorted(p for p in args.models.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for number in list_versions(model_dir):
            path = model_dir / str(number)
            try:
                manifest = read_manifest(path)
                problems = verify_files(path, manifest)
                state = "ok" if not problems else "TAMPERED: " + "; ".join(problems)
                print(f"{model_dir.name}/{number}\t{manifest.format}\t{manifest.precision}\t{state}")
            except ManifestError as exc:
                problems = [str(exc)]
                print(f"{model_dir.name}/{number}\t?\t?\tINVALID: {exc}")
            bad += bool(problems)
    return 1 if bad else 0


def run_encrypt(args: argparse.Namespace) -> int:
    from appliance.artifacts import encrypt_command

    return encrypt_command(args.models, args.target, args.key_file, args.config, args.state_dir)
