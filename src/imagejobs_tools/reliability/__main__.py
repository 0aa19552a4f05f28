"""`python -m imagejobs_tools.reliability SUITE [--size N | --smoke] [--json]`.

Prints each suite's figures; exits 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from datetime import UTC, datetime

from imagejobs_tools.reliability.suites import FULL_SIZES, SMOKE_SIZES, SUITES, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagejobs_tools.reliability", description=__doc__)
    parser.add_argument("suite", choices=(*SUITES, "all"))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help=f"jobs per suite (full sizes: {FULL_SIZES})")
    size.add_argument("--smoke", action="store_true", help=f"the test-suite sizes ({SMOKE_SIZES})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 1:
        parser.error("--size must be at least 1")
    logging.basicConfig(level=logging.ERROR)  # the local stack's own chatter
    names = SUITES if args.suite == "all" else (args.suite,)
    failed = False
    for name in names:
        # Powertools metrics and the local stack print to stdout: keep stdout for the report alone.
        with contextlib.redirect_stdout(sys.stderr):
            report = run_suite(name, args.size, smoke=args.smoke)
        report.extra.setdefault("run at", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
        print(json.dumps(report.to_json(), default=str) if args.json else report.render(), flush=True)
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
