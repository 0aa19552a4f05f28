"""The `imagejobs` console script.

Each command group lives in its own module exposing `register(subparsers)`;
heavy imports happen inside the command functions so `imagejobs --help` and
`imagejobs sim` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "imagejobs_tools.sim.command",  # imagejobs sim
    "imagejobs_tools.local.command",  # imagejobs local up|demo
    "imagejobs_tools.jobcli.command",  # imagejobs submit|status|list|watch|download
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagejobs", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
