"""`imagejobs sim`: placeholder until the simulator lands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="run the provider simulator")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise SystemExit("imagejobs sim: not implemented yet")
