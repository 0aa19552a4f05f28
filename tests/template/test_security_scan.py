"""The template passes checkov (an IaC security scanner): every finding is fixed or reasoned in the template.

Three scans, offline (docs/deploy.md, "Security review"):
- template.yaml as a reviewer runs it (`make scan`): no failed check;
- the CloudFormation it deploys with default parameters (translated, conditions resolved, so the
  resources SAM generates are scanned too and an `!If` cannot hide a finding): the failed checks are
  exactly the template's skips, so a new finding fails and so does a skip nothing needs any more;
- the same with KmsKeyArn and AccessLogBucketName set: the optional checks pass, proving each option
  reaches every resource it is meant to.

checkov pins boto3 far below aws-sam-cli's pin, so it lives in its own venv (`make checkov`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.local.template import evaluate_condition

from .conftest import REPO_ROOT, TEMPLATE_PATH, Template, load_sam_template, translate

pytestmark = [pytest.mark.template, pytest.mark.xdist_group("checkov")]

CHECKOV = Path(os.environ.get("CHECKOV", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))

# Findings the template fixes only when a parameter asks for it: a customer-managed key
# (KmsKeyArn) and S3 server access logging (AccessLogBucketName).
OPTIONAL_CHECKS = {"CKV_AWS_27", "CKV_AWS_119", "CKV_AWS_149", "CKV_AWS_158", "CKV_AWS_18"}
# The batch-completion topic exists only with an address: scanned in both deployments.
DEFAULTS = {"BatchCompletedEmail": "ops@example.com"}
WITH_OPTIONS = {
    **DEFAULTS,
    "KmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "AccessLogBucketName": "example-access-logs",
}

# Offline: no policy download, no platform API key, no update check (env below); JSON on stdout.
SCAN_OPTIONS = ["--framework", "cloudformation", "--skip-download", "--compact", "-o", "json"]

Finding = tuple[str, str]  # (logical id, check id)


def run_checkov(path: Path) -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.fail(
            f"checkov is not installed at {CHECKOV}: run `make checkov` (its own venv, .venv-checkov)"
        )
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CKV_SKIP_PACKAGE_UPDATE_CHECK="TRUE")
    env.pop("BC_API_KEY", None)
    result = subprocess.run(
        [str(CHECKOV), "-f", str(path), *SCAN_OPTIONS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    assert report["summary"]["resource_count"] > 0, report["summary"]
    return report


def _findings(report: dict[str, Any], kind: str) -> set[Finding]:
    return {
        (check["resource"].split(".", 1)[1], check["check_id"])
        for check in report["results"][f"{kind}_checks"]
    }


def _skips(template: Template) -> dict[Finding, str]:
    """(logical id, check id) -> reason, from each resource's Metadata.checkov.skip."""
    found: dict[Finding, str] = {}
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            found[(name, skip["id"])] = skip.get("comment", "")
    return found


def resolve_conditions(template: Template, parameters: dict[str, str]) -> Template:
    """What CloudFormation would create: resources whose Condition is false dropped, `Fn::If` chosen."""
    truth = {name: evaluate_condition(template, name, parameters) for name in template.get("Conditions", {})}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                condition, if_true, if_false = node["Fn::If"]
                return resolve(if_true if truth[condition] else if_false)
            resolved = {key: resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value != {"Ref": "AWS::NoValue"}}
        if isinstance(node, list):
            return [item for item in map(resolve, node) if item != {"Ref": "AWS::NoValue"}]
        return node

    resources = {
        name: resolve(resource)
        for name, resource in template["Resources"].items()
        if truth.get(resource.get("Condition", ""), True)
    }
    # checkov reads a Ref to a parameter as its default: make the defaults these values.
    declared = json.loads(json.dumps(template["Parameters"]))
    for name, value in parameters.items():
        declared[name]["Default"] = value
    return {"AWSTemplateFormatVersion": "2010-09-09", "Parameters": declared, "Resources": resources}


def deployed_template(parameters: dict[str, str], tmp_path: Path, name: str) -> Path:
    """The translated template for these parameters, without any checkov skip, as a file."""
    resolved = resolve_conditions(translate(load_sam_template(), parameters), parameters)
    for resource in resolved["Resources"].values():
        resource.get("Metadata", {}).pop("checkov", None)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(resolved, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def skips() -> dict[Finding, str]:
    return _skips(load_sam_template())


def test_every_skip_names_a_check_and_gives_a_reason(skips: dict[Finding, str]) -> None:
    assert skips, "template.yaml has no checkov skips: did the Metadata move?"
    for (resource, check_id), reason in skips.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check_id), (resource, check_id)
        assert len(reason.strip()) >= 20, f"{resource} skips {check_id} without a reason"


def test_template_yaml_has_no_failed_check() -> None:
    report = run_checkov(TEMPLATE_PATH)
    assert not _findings(report, "failed"), json.dumps(report["results"]["failed_checks"], indent=1)
    assert report["summary"]["passed"] > 0


def test_deployed_template_fails_exactly_the_reasoned_checks(
    skips: dict[Finding, str], tmp_path: Path
) -> None:
    report = run_checkov(deployed_template(DEFAULTS, tmp_path, "default"))
    failed = _findings(report, "failed")
    unreasoned = failed - set(skips)
    assert not unreasoned, f"new findings, fix them or skip them with a reason in template.yaml: {unreasoned}"
    stale = set(skips) - failed
    assert not stale, f"skips no finding needs any more (remove them from template.yaml): {stale}"


def test_options_clear_the_optional_checks(skips: dict[Finding, str], tmp_path: Path) -> None:
    report = run_checkov(deployed_template(WITH_OPTIONS, tmp_path, "with-options"))
    failed = _findings(report, "failed")
    assert failed == {skip for skip in skips if skip[1] not in OPTIONAL_CHECKS}
    optional_skips = {skip for skip in skips if skip[1] in OPTIONAL_CHECKS}
    assert optional_skips and optional_skips <= _findings(report, "passed")
