"""``appliance config``: print the table of every setting, or the effective settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="configuration reference and effective settings")
    parser.add_argument("action", choices=["table", "show"], help="table: markdown reference; show: effective")
    parser.add_argument("--config", type=Path)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.config import load_settings, settings_table

    if args.action == "table":
        print(settings_table(), end="")
        return 0
    settings = load_settings(args.config)
    print(json.dumps(dataclasses.asdict(settings), indent=2, default=str))
    return 0
