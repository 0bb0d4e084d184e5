"""``appliance keys create|list|revoke``: manage API keys (the store keeps hashes only).

A running server notices changes within a second (it re-reads the store when its mtime
changes), so a revoked key stops working without a restart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.config import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys")
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="principal name (shown in logs and the audit log)")
    create.add_argument("--scopes", required=True, help="comma-separated: infer, read, admin, audit")
    create.add_argument("--models", help="comma-separated models the key is limited to (default: all)")
    listing = sub.add_parser("list", help="list keys (never the secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by name or key id")
    revoke.add_argument("key", help="name or key id")
    for each in (create, listing, revoke):
        each.add_argument("--config", type=Path, help="appliance.toml")
        each.add_argument("--state-dir", type=Path, help="state folder (server.state_dir)")
        each.add_argument("--keys-file", type=Path, help="the store (default: auth.api_keys_file or "
                          "<state_dir>/api-keys.json)")
    create.set_defaults(func=run_create)
    listing.set_defaults(func=run_list)
    revoke.set_defaults(func=run_revoke)


def _settings(args: argparse.Namespace) -> Settings:
    from appliance.config import load_settings

    settings = load_settings(args.config)
    if args.state_dir is not None:
        settings = settings.replace("server", state_dir=args.state_dir)
    return settings


def _store(args: argparse.Namespace) -> Path:
    from appliance.auth.apikeys import store_path

    if args.keys_file is not None:
        return Path(args.keys_file)
    return store_path(_settings(args))


def _audit(args: argparse.Namespace, action: str, detail: str) -> None:
    from appliance.audit.admin import record_admin_action

    record_admin_action(_settings(args), action, detail)


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def run_create(args: argparse.Namespace) -> int:
    from appliance.auth.apikeys import locked_store, new_key
    from appliance.auth.principal import ScopeError

    path = _store(args)
    try:
        token, record = new_key(args.name, _split(args.scopes), _split(args.models) or None)
    except ScopeError as exc:
        print(f"appliance keys: {exc}", file=sys.stderr)
        return 2
    with locked_store(path) as records:
        if any(r.name == args.name and r.revoked_at is None for r in records.values()):
            print(f"appliance keys: an active key named {args.name!r} exists; revoke it first", file=sys.stderr)
            return 1
        records[record.key_id] = record
    _audit(args, "key_create", f"API key {record.key_id} for {args.name!r}: scopes {','.join(record.scopes)}"
           f"{'; models ' + ','.join(record.models) if record.models else ''}")
    print(token)
    print(f"created key {record.key_id} for {args.name!r} ({','.join(record.scopes)}"
          f"{'; models ' + ','.join(record.models) if record.models else ''}) in {path}; "
          "the key is shown only now", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from appliance.auth.apikeys import read_store

    for record in sorted(read_store(_store(args)).values(), key=lambda r: r.created_at):
        state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
        models = ",".join(record.models) if record.models else "*"
        print(f"{record.key_id}\t{record.name}\t{','.join(record.scopes)}\t{models}\t{record.created_at}\t{state}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    import dataclasses
    from datetime import UTC, datetime

    from appliance.auth.apikeys import locked_store

    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with locked_store(_store(args)) as records:
        hits = [r for r in records.values() if r.revoked_at is None and args.key in (r.key_id, r.name)]
        for record in hits:
            records[record.key_id] = dataclasses.replace(record, revoked_at=now)
    if not hits:
        print(f"appliance keys: no active key named or with id {args.key!r}", file=sys.stderr)
        return 1
    _audit(args, "key_revoke", f"API key(s) {', '.join(r.key_id for r in hits)} revoked")
    print(f"revoked {', '.join(r.key_id for r in hits)}", file=sys.stderr)
    return 0
