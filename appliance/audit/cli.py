"""``appliance audit init-keys | verify | export | rotate-key | purge | checkpoints``.

Exit status: 0 success, 1 the log does not verify, 2 an error (missing key, bad argument...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.config import ConfigError, Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if args.state_dir is not None:
        settings = settings.replace("server", state_dir=args.state_dir)
    return settings


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Turn the audit errors every command may meet into one line on stderr and exit status 2."""
    def run(args: argparse.Namespace) -> int:
        from appliance.audit.model import AuditError

        try:
            return handler(args, _settings(args))
        except (AuditError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `appliance audit export | head`
            sys.stderr.close()
            return 0
    return run


def _init_keys(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.keys import init_keys

    for path, created in init_keys(settings):
        print(f"{'created' if created else 'kept'} {path}")
    return 0


def _public_key(args: argparse.Namespace, settings: Settings) -> str:
    from appliance.audit.keys import SIGNING_KEY_FILE, load_signing_key, public_key_hex, resolve_read_path

    if args.public_key:
        candidate = Path(args.public_key)
        return (candidate.read_text().strip() if candidate.exists() else args.public_key).lower()
    return public_key_hex(load_signing_key(resolve_read_path(settings, SIGNING_KEY_FILE)))


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.keys import KEY_FILE, load_keyring, resolve_read_path
    from appliance.audit.log import audit_paths
    from appliance.audit.model import AuditKeyError
    from appliance.audit.verify import verify

    paths = audit_paths(settings)
    keyring = None
    if not args.no_decrypt:
        try:
            keyring = load_keyring(resolve_read_path(settings, KEY_FILE))
        except AuditKeyError as exc:
            print(f"note: ciphertexts not authenticated ({exc})", file=sys.stderr)
    report = verify(paths.database, args.checkpoints or paths.checkpoints, _public_key(args, settings), keyring)
    for note in report.notes:
        print(f"note: {note}")
    if not report.ok:
        print(f"FAILED at {report.first_problem}")
        for problem in sorted(report.problems, key=lambda p: p.seq)[1:]:
            print(f"  also {problem}")
        return 1
    span = f"seq {report.first_seq}..{report.last_seq}" if report.rows else "no rows"
    print(f"OK: {report.rows} rows ({span}), {report.checkpoints} signed checkpoints, "
          f"last signed seq {report.last_signed_seq}, ciphertexts "
          f"{'authenticated' if report.decrypted else 'not checked'}")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit import export
    from appliance.audit.keys import KEY_FILE, load_keyring, resolve_read_path
    from appliance.audit.log import audit_paths

    keyring = load_keyring(resolve_read_path(settings, KEY_FILE))
    since = export.parse_when(args.since) if args.since else None
    until = export.parse_when(args.until) if args.until else None
    rows = export.records(audit_paths(settings).database, keyring, since, until)
    write = export.write_csv if args.format == "csv" else export.write_jsonl
    if args.output is None:
        count = write(rows, sys.stdout)
    else:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            count = write(rows, out)
    print(f"exported {count} records", file=sys.stderr)
    return 0


def _rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.keys import rotate_key
    from appliance.audit.log import AuditLog
    from appliance.audit.model import AuditRecord

    path, old, new = rotate_key(settings)
    log = AuditLog.open(settings)
    log.append_nowait(AuditRecord("key_create", detail=f"audit key rotated: {old} -> {new}"))
    log.close()
    print(f"{path}: new active key {new} (previous {old} kept for reading); restart the server "
          f"(and refresh its credential) so new records use it")
    return 0


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.export import parse_when
    from appliance.audit.retention import purge

    result = purge(settings, parse_when(args.before))
    if result.anchor_seq is None:
        print("nothing to purge")
    else:
        print(f"purged {result.purged} records up to seq {result.anchor_seq}; signed anchor written")
    return 0


def _checkpoints(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.log import audit_paths

    path = audit_paths(settings).checkpoints
    data = path.read_bytes() if path.exists() else b""
    if args.output is None:
        sys.stdout.write(data.decode())
    else:
        args.output.write_bytes(data)
    lines = data.count(b"\n")
    print(f"{lines} checkpoints; verify against public key {_public_key(args, settings)}",
          file=sys.stderr)
    return 0


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler,
         helptext: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=helptext, description=helptext)
    parser.add_argument("--config", type=Path, help="appliance.toml (finds the database and keys)")
    parser.add_argument("--state-dir", type=Path, help="override server.state_dir")
    parser.set_defaults(func=_run(handler))
    return parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="encrypted, tamper-evident audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    _add(sub, "init-keys", _init_keys, "create the AES keyring and the Ed25519 signing key (0600) if absent")
    verify = _add(sub, "verify", _verify, "check the hash chain, ciphertexts and signed checkpoints")
    verify.add_argument("--checkpoints", type=Path, help="a copy of the checkpoint file kept elsewhere")
    verify.add_argument("--public-key", help="trusted Ed25519 public key (hex, or a file holding it)")
    verify.add_argument("--no-decrypt", action="store_true", help="skip authenticating ciphertexts")
    export = _add(sub, "export", _export, "decrypt records (needs the key)")
    export.add_argument("--since", help="first time included (date or ISO 8601, UTC by default)")
    export.add_argument("--until", help="first time excluded")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    _add(sub, "rotate-key", _rotate_key, "new AES key for new records; old keys stay for reading")
    purge = _add(sub, "purge", _purge, "delete records older than a date; the chain stays verifiable")
    purge.add_argument("--before", required=True, help="date or ISO 8601 time (UTC by default)")
    cps = _add(sub, "checkpoints", _checkpoints, "print the signed checkpoints (to keep a copy elsewhere)")
    cps.add_argument("--output", type=Path, help="file to write (default: stdout)")
    cps.add_argument("--public-key", help=argparse.SUPPRESS)
