"""Shared fixtures: fake AWS credentials, function environment, handler loading by path."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
FAKE_REGION = "us-east-1"


def load_handler(name: str) -> ModuleType:
    """Load ``functions/<name>/app.py`` afresh as module ``imagejobs_fn_<name>`` (never ``app``)."""
    path = FUNCTIONS_DIR / name / "app.py"
    module_name = f"imagejobs_fn_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # as a failed import leaves no module behind
        raise
    return module


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a real AWS account: fake credentials and a fixed region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", FAKE_REGION)
    monkeypatch.setenv("AWS_REGION", FAKE_REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ImageJobs")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "imagejobs")


@pytest.fixture(name="load_handler")
def load_handler_fixture() -> Callable[[str], ModuleType]:
    return load_handler


@dataclass
class FakeLambdaContext:
    function_name: str = "imagejobs-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:imagejobs-test"
    aws_request_id: str = "req-00000000"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


# A value for every variable some function reads, as a deployed stack would set them: each
# function's template Environment is a subset (tests/template/test_function_environment.py).
SAMPLE_ENV = {
    "JOBS_TABLE": "imagejobs-jobs",
    "OUTPUT_BUCKET": "imagejobs-outputs",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:imagejobs-job",
    "PROVIDER_BASE_URL": "https://provider.invalid",
    "PROVIDER_API_KEY_SECRET": "imagejobs/provider-api-key",
    "POLL_INTERVAL_SECONDS": "2",
    "MAX_WAIT_IMAGE_SECONDS": "600",
    "MAX_WAIT_VIDEO_SECONDS": "1800",
    "OUTPUT_PREFIX": "outputs/",
    "MAX_OUTPUT_BYTES": str(64 * 1024 * 1024),
    "URL_ALLOW_HOSTS": "",
    "PRESIGN_TTL_SECONDS": "900",
    "JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-JobsQueue-EXAMPLE",
    "UPLOADS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-UploadsQueue-EXAMPLE",
    "LOG_LEVEL": "INFO",
    "EVENT_BUS_NAME": "imagejobs-events",
    "WEBHOOK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-WebhookDeliveryQueue-EXAMPLE",
    "WEBHOOK_DEAD_LETTER_QUEUE_URL": (
        "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-WebhookDeadLetterQueue-EXAMPLE"
    ),
    "WEBHOOK_SIGNING_SECRET": "imagejobs/webhook-signing-secret",
    "BATCH_RESULTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-BatchResultsQueue-EXAMPLE",
}


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """SAMPLE_ENV in os.environ (override entries with monkeypatch before loading a handler:
    handlers read their settings at import)."""
    env = dict(SAMPLE_ENV)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


# -- IAM audit over the whole session ---------------------------------------------------------
# Every local stack writes its functions' audit when it stops (imagejobs_tools.local.iam_audit);
# the session fails on any call a function's role would deny, and, when the session ran the
# end-to-end and reliability tests, on any granted action no run used.

IAM_AUDIT_KEY = pytest.StashKey[Path]()
IAM_FINDINGS_KEY = pytest.StashKey[list[str]]()
# Granted on purpose but not exercised by any local run, with the reason.
IAM_GRANTS_UNUSED_LOCALLY = {
    ("S3IntakeFunction", "s3:GetObjectVersion"): (
        "the bucket is versioned and S3 events name the version on AWS; moto's events carry no versionId"
    ),
    ("FinalizeFunction", "dynamodb:GetItem"): (
        "the REFUND outcome reads the FAILED record (workflow.record_late_refund): only a refund the "
        "provider shows after the job failed; tests/unit/domain tests it with moto in-process"
    ),
    ("S3IntakeFunction", "sqs:ChangeMessageVisibility"): (
        "brings a failed S3 event's retry forward; only an AWS error or a malformed event raises, which "
        "the aws-faults suite provokes at random; tests/unit/uploads/test_handler_and_recursion.py"
    ),
    ("StoreOutputsFunction", "s3:AbortMultipartUpload"): (
        "the copier aborts a multipart upload that failed part-way (outputs over the multipart threshold "
        "meeting a storage error); tests/unit copier tests"
    ),
    ("BatchResultsFunction", "dynamodb:GetItem"): (
        "a record the ByBatch index still shows unfinished is read again from the table; moto's indexes "
        "never lag; tests/unit/domain/test_batches.py (LaggingIndex)"
    ),
    ("BatchResultsFunction", "s3:AbortMultipartUpload"): (
        "a results file that fails part-way is aborted; tests/unit/domain/test_batches.py"
    ),
    ("StoreOutputsFunction", "s3:PutObjectTagging"): (
        "the copier tags outputs it stored but could not record (imagejobs-orphan); the crash suite kills "
        "the process before that cleanup can run; tests/unit copier tests"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    from imagejobs_tools.local.iam_audit import REPORT_DIR_VARIABLE

    if hasattr(config, "workerinput"):  # an xdist worker: the controller set the directory
        return
    directory = Path(tempfile.mkdtemp(prefix="imagejobs-iam-"))
    os.environ[REPORT_DIR_VARIABLE] = str(directory)  # xdist workers and subprocesses inherit it
    config.stash[IAM_AUDIT_KEY] = directory


# The longest units of work first (`make test` passes --no-loadscope-reorder, so xdist hands units
# out in this order): the benchmarks' smoke runs, the stack suites and the Docker stack's group, 4-5
# minutes each, would otherwise start late and leave one worker finishing them alone. The Docker
# group comes third: by then its setup, started beside the suite, has finished.
LONGEST_FIRST = ("tests/bench/", "tests/reliability/test_stack_suites.py", "tests/samlocal/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next(
            (n for n, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST)
        )

    items.sort(key=rank)  # stable: collection order within each rank


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from imagejobs_tools.local.iam_audit import combine_reports

    directory = session.config.stash.get(IAM_AUDIT_KEY, None)
    if directory is None:
        return
    combined = combine_reports(directory, REPO_ROOT / "template.yaml")
    findings = [
        f"DENIED {d['function']}: {d['action']} on {d['resource']} ({d['decision']})" for d in combined.denied
    ]
    findings += [f"UNMAPPED {m['function']}: {m['service']}:{m['operation']}" for m in combined.unmapped]
    if combined.runs and all(
        _session_covers(session.config, REPO_ROOT / "tests" / d) for d in ("e2e", "reliability")
    ):
        findings += [
            f"UNUSED {function}: {action} ({policy} {statement}): no call in {combined.runs} stacks"
            for function, action, policy, statement in combined.never_used
            if (function, action) not in IAM_GRANTS_UNUSED_LOCALLY
        ]
    summary = f"{combined.runs} stacks of template.yaml audited, {len(findings)} findings"
    session.config.stash[IAM_FINDINGS_KEY] = [summary, *findings]
    if findings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(directory, ignore_errors=True)


def _session_covers(config: pytest.Config, directory: Path) -> bool:
    """Whether the session was asked to run all of `directory` (xdist's controller collects nothing)."""
    asked = [Path(arg.split("::")[0]).resolve() for arg in config.args] or [Path.cwd()]
    return any(path == directory or path in directory.parents for path in asked)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(IAM_FINDINGS_KEY, None)
    if lines:
        terminalreporter.section("IAM audit: template.yaml's roles against the functions' calls")
        for line in lines:
            terminalreporter.write_line(line)
