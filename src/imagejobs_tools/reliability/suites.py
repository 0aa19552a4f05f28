"""Suite registry: name -> runner, with the full (benchmark) and smoke (test suite) sizes."""

from __future__ import annotations

import os
from collections.abc import Callable

from imagejobs_tools.reliability.report import SuiteReport

FULL_SIZES: dict[str, int] = {
    "duplicates": 1000,
    "faults": 500,
    "crashes": 200,
    "account": 30,
    "aws-faults": 1000,
    "budget": 1000,
    "webhooks": 1000,
}
SMOKE_SIZES: dict[str, int] = {
    "duplicates": 12,
    "faults": 25,
    "crashes": 8,
    "account": 3,
    "aws-faults": 20,
    "budget": 10,
    "webhooks": 12,
}
SUITES = (
    "duplicates", "faults", "crashes", "account", "aws-faults", "budget", "webhooks", "badinput", "outputs",
    "security",
)  # fmt: skip


def _fake_aws_credentials() -> None:
    # In-process moto and the local stack never reach AWS; boto3 still wants credentials and a region.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        os.environ.setdefault(name, value)


def run_suite(name: str, size: int | None = None, *, smoke: bool = False) -> SuiteReport:
    """Run one suite; ``size`` defaults to the full size (or the smoke size with ``smoke``)."""
    _fake_aws_credentials()
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r} (choose from {', '.join(SUITES)})")
    if name in FULL_SIZES and size is None:
        size = SMOKE_SIZES[name] if smoke else FULL_SIZES[name]
    runner: Callable[..., SuiteReport]
    if name == "badinput":
        from imagejobs_tools.reliability.badinput import run_badinput

        return run_badinput(limit=size)
    if name == "outputs":
        from imagejobs_tools.reliability.outputs import run_outputs

        return run_outputs()
    if name == "security":
        from imagejobs_tools.reliability.security import run_security

        return run_security()
    if name == "budget":
        from imagejobs_tools.reliability.budgetsuite import run_budget

        return run_budget(size or SMOKE_SIZES[name])
    if name == "webhooks":
        from imagejobs_tools.reliability.webhooksuite import run_webhooks

        return run_webhooks(size or SMOKE_SIZES[name])
    from imagejobs_tools.reliability import stacksuites

    runner = getattr(stacksuites, f"run_{name.replace('-', '_')}")
    return runner(size)
