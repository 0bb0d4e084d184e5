"""``python -m optimizer SOURCE ...``: the optimizer without the appliance installed."""

from __future__ import annotations

import argparse
import sys

from optimizer.cli import add_arguments, run
from optimizer.progress import disable_usage_telemetry


def main(argv: list[str] | None = None) -> int:
    disable_usage_telemetry()
    parser = argparse.ArgumentParser(prog="python -m optimizer", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
