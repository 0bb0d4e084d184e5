"""``appliance rollout show|set|promote|rollback MODEL``: the rollout file every server process watches.

A change takes effect on a running server within a second (it re-reads the file and loads the
versions the rollout needs); it is recorded in the audit log. The same operations exist over REST
(``GET/PUT /v2/models/{m}/rollout``), where the server also reports what the rollout has measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rollout", help="canary, A/B and shadow rollouts of a model's versions")
    sub = parser.add_subparsers(dest="rollout_command", required=True)
    for name, text in (("show", "print the rollout"), ("promote", "make the candidate the stable version"),
                       ("rollback", "send all traffic back to the stable version")):
        command = sub.add_parser(name, help=text)
        command.add_argument("model")
        _common(command)
        command.set_defaults(func=run)
    setter = sub.add_parser("set", help="start a rollout: --stable N --candidate M [--mode canary|ab|shadow]")
    setter.add_argument("model")
    setter.add_argument("--stable", type=int, required=True)
    setter.add_argument("--candidate", type=int, required=True)
    setter.add_argument("--mode", choices=["canary", "ab", "shadow"], default="canary")
    setter.add_argument("--share", type=float, default=0.1, help="fraction for the candidate (or mirrored)")
    setter.add_argument("--sticky-header", default="", help="A/B: the header whose value picks the version")
    setter.add_argument("--min-samples", type=int)
    setter.add_argument("--max-error-rate", type=float)
    setter.add_argument("--max-p99-ratio", type=float)
    setter.add_argument("--min-agreement", type=float)
    _common(setter)
    setter.set_defaults(func=run)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="appliance.toml")
    parser.add_argument("--state-dir", type=Path, help="state folder (server.state_dir)")


def run(args: argparse.Namespace) -> int:
    import getpass

    import orjson

    from appliance.audit.admin import record_admin_action
    from appliance.config import load_settings
    from appliance.errors import InvalidInput
    from appliance.lifecycle.rollout import RolloutStore, parse_rollout

    settings = load_settings(args.config)
    state_dir = args.state_dir or settings.server.state_dir
    store = RolloutStore(state_dir / "rollouts.json")
    current = store.get(args.model)
    who = f"cli:{getpass.getuser()}"
    try:
        if args.rollout_command == "show":
            print(orjson.dumps(current.to_dict() if current else None, option=orjson.OPT_INDENT_2).decode())
            return 0
        if args.rollout_command == "set":
            thresholds = {k: v for k in ("min_samples", "max_error_rate", "max_p99_ratio", "min_agreement")
                          if (v := getattr(args, k)) is not None}
            rollout = parse_rollout(args.model, {"stable": args.stable, "candidate": args.candidate,
                                                 "mode": args.mode, "share": args.share,
                                                 "sticky_header": args.sticky_header, "thresholds": thresholds}
                                    ).with_event("set", who)
        elif current is None or not current.active:
            raise InvalidInput(f"model '{args.model}' has no active rollout")
        elif args.rollout_command == "promote":
            rollout = current.with_event("promote", who, state="promoted", stable=current.candidate,
                                         candidate=current.stable)
        else:
            rollout = current.with_event("rollback", who, "by the operator", state="rolled_back")
    except InvalidInput as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    store.put(rollout)
    record_admin_action(settings.replace("server", state_dir=state_dir), f"rollout_{rollout.history[-1]['action']}",
                        f"{rollout.mode} {rollout.share:g} stable {rollout.stable} candidate {rollout.candidate} "
                        f"state {rollout.state}", model=args.model, version=str(rollout.candidate))
    print(f"{args.model}: {rollout.state}, stable {rollout.stable}, candidate {rollout.candidate} "
          f"({rollout.mode} {rollout.share:g})")
    return 0
