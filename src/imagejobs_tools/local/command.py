"""`imagejobs local`: placeholder until the local stack lands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("local", help="run the whole pipeline on this machine")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise SystemExit("imagejobs local: not implemented yet")
