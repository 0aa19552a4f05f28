"""Reliability benchmark (issue 6): `python bench/reliability.py SUITE|all [--size N | --smoke] [--json]`.

A thin wrapper over `python -m imagejobs_tools.reliability`; figures in docs/reliability.md.
"""

from __future__ import annotations

import sys

from imagejobs_tools.reliability.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
