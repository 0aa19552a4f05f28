"""Suite 6, security: IAM/bucket checks of the translated template, and the API key never logged.

The template checks live in tests/template/test_translation.py and are run from here rather
than duplicated; the key checks reuse the bad-input and account suites, which capture every
handler log line (at DEBUG) and scan every record.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from imagejobs_tools.reliability.report import SuiteReport

REPO = Path(__file__).resolve().parents[3]
TEMPLATE_CHECKS = (
    "test_no_iam_statement_allows_a_wildcard_action",
    "test_resource_star_only_for_actions_aws_requires_it",
    "test_roles_only_carry_allow_listed_managed_policies",
    "test_output_bucket_denies_insecure_transport",
    "test_output_bucket_is_private_encrypted_and_cleans_up_multipart",
)
KEY_CHECKS = {
    "badinput": "API key absent from captured logs and records",
    "account": "API keys (right and wrong) absent from logs and records",
}


def run_template_checks() -> dict[str, bool]:
    """Each named test of tests/template/test_translation.py -> passed."""
    path = REPO / "tests" / "template" / "test_translation.py"
    results: dict[str, bool] = {}
    for name in TEMPLATE_CHECKS:
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{path}::{name}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        results[name] = completed.returncode == 0
    return results


def run_security(account_size: int = 3) -> SuiteReport:
    from imagejobs_tools.reliability.badinput import run_badinput
    from imagejobs_tools.reliability.stacksuites import run_account

    report = SuiteReport("security")
    started = time.perf_counter()
    for name, held in run_template_checks().items():
        report.check(f"template: {name.removeprefix('test_').replace('_', ' ')}", held)
    for suite in (run_badinput(), run_account(account_size)):
        label = KEY_CHECKS[suite.suite]
        report.check(f"{suite.suite}: {label}", suite.checks.get(label, False))
        report.extra[f"{suite.suite} log bytes grepped"] = suite.extra.get("log bytes grepped", "n/a")
    report.wall_seconds = time.perf_counter() - started
    return report
