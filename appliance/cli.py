"""``appliance`` command line: ``serve``, ``optimize``, ``audit``, ``keys``, ``models``, ``config``, ``batch``.

Each subcommand lives in its own module exposing ``register(subparsers)``; that module must not
import heavy libraries at import time (the runtimes, NNCF), so ``appliance --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules contributing subcommands. A module that is missing (an optional part not installed)
#: is skipped, so the serving install works without the optimizer's extras.
COMMAND_MODULES = (
    "appliance.commands.serve",
    "appliance.commands.config",
    "appliance.commands.models",
    "appliance.commands.rollout",
    "appliance.commands.batch",
    "appliance.audit.cli",
    "appliance.auth.cli",
    "optimizer.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="CPU-first model-serving appliance (Open Inference Protocol)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from appliance.telemetry import disable_usage_telemetry

    disable_usage_telemetry()
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
