"""Reliability suites (issues 6, 16): duplicates, faults, crashes, account, budget, webhooks, bad input.

`python -m imagejobs_tools.reliability SUITE [--size N | --smoke] [--json]`; docs/reliability.md
has the figures and the command behind each.
"""

from __future__ import annotations

from imagejobs_tools.reliability.report import SuiteReport
from imagejobs_tools.reliability.suites import FULL_SIZES, SMOKE_SIZES, SUITES, run_suite

__all__ = ["FULL_SIZES", "SMOKE_SIZES", "SUITES", "SuiteReport", "run_suite"]
