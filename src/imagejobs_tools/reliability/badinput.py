"""Suite 5, bad input: the corpus through the real intake, plus output refusals through the copier.

Runs with in-process moto (`mock_aws`) and the provider simulator over loopback HTTP, so
every provider request and credit is counted by the simulator itself. Host names resolve
through `FAKE_DNS`: the network is never used.
"""

from __future__ import annotations

import base64
import functools
import json
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from imagejobs_tools.reliability.logcapture import captured_logs, find_secret
from imagejobs_tools.reliability.report import SuiteReport

if TYPE_CHECKING:
    from imagejobs.config import IntakeSettings
    from imagejobs.provider import TaskSubmitter
    from imagejobs.store import JobStore
    from mypy_boto3_dynamodb import DynamoDBServiceResource
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

    from imagejobs_tools.sim import Simulator

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "tests" / "reliability" / "corpus"
BUCKET = "imagejobs-reliability-outputs"
TABLE = "imagejobs-reliability-jobs"
SECRET = "imagejobs-reliability/api-key"
REGION = "us-east-1"

# Fixed answers for the host names the corpus uses; anything else does not resolve.
FAKE_DNS: dict[str, list[str]] = {
    "cdn.example.com": ["93.184.216.34"],
    "meta.example.com": ["169.254.169.254"],
    "internal.example.com": ["93.184.216.34", "10.1.2.3"],  # one bad answer is enough to refuse
    "rebind.example.com": ["::1"],
}


def fake_resolver(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    addresses = FAKE_DNS.get(str(host).lower())
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    infos = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        infos.append((family, socket.SOCK_STREAM, 6, "", (address, port or 443)))
    return infos


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    spec: dict[str, Any]
    expect_field: str
    reason_contains: str | None = None
    source: str = "validation"


@dataclass
class CaseResult:
    case: Case
    status: str | None
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    crash: str | None = None
    problems: list[str] = field(default_factory=list)


def load_corpus(directory: Path = DEFAULT_CORPUS) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.glob("*.json")):
        for spec in json.loads(path.read_text(encoding="utf-8")):
            expect = spec["expect"]
            cases.append(
                Case(
                    name=spec["name"],
                    family=path.stem,
                    spec=spec,
                    expect_field=expect["field"],
                    reason_contains=expect.get("reasonContains"),
                    source=expect.get("source", "validation"),
                )
            )
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"duplicate corpus case names: {sorted(duplicates)}")
    return cases


def _fill_bucket(value: Any, bucket: str) -> Any:
    if isinstance(value, str):
        return value.replace("{bucket}", bucket)
    if isinstance(value, list):
        return [_fill_bucket(item, bucket) for item in value]
    if isinstance(value, dict):
        return {key: _fill_bucket(item, bucket) for key, item in value.items()}
    return value


def generate(spec: dict[str, Any]) -> str:
    """Bodies too big or too deep to keep as fixtures."""
    kind = spec["kind"]
    if kind == "huge_body":
        return json.dumps({"prompt": "a", "providerInput": {"pad": "x" * int(spec["bytes"])}})
    if kind == "deep_nesting":
        depth = int(spec["depth"])
        return '{"prompt": "a", "providerInput": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    if kind == "deep_nesting_raw":
        depth = int(spec["depth"])
        return "[" * depth + "]" * depth
    if kind == "long_prompt":
        text = str(spec.get("char", "a")) * int(spec["chars"])
        return json.dumps({"prompt": text, "model": spec.get("model", "gpt-image-2")})
    if kind == "big_provider_input":
        return json.dumps({"prompt": "a", "providerInput": {"pad": "p" * int(spec["bytes"])}})
    if kind == "big_metadata":
        count = int(spec["bytes"]) // 100 + 1
        return json.dumps({"prompt": "a", "metadata": {f"k{i}": "v" * 98 for i in range(count)}})
    if kind == "many_urls":
        urls = [f"https://cdn.example.com/{i}.png" for i in range(int(spec["count"]))]
        return json.dumps({"prompt": "a", "model": spec.get("model", "gpt-image-2"), "inputImageUrls": urls})
    if kind == "long_url":
        return json.dumps(
            {"prompt": "a", "inputImageUrls": ["https://cdn.example.com/" + "a" * int(spec["chars"])]}
        )
    if kind == "long_prefix":
        return json.dumps({"prompt": "a", "outputPrefix": "p" * int(spec["chars"]) + "/"})
    raise ValueError(f"unknown generator {kind!r}")


def build_body(case: Case, bucket: str = BUCKET) -> str | bytes:
    spec = case.spec
    if "json" in spec:
        return json.dumps(_fill_bucket(spec["json"], bucket))
    if "raw" in spec:
        return str(spec["raw"])
    if "rawBase64" in spec:
        return base64.b64decode(spec["rawBase64"])
    if "generate" in spec:
        return generate(spec["generate"])
    raise ValueError(f"case {case.name}: no body form (json/raw/rawBase64/generate)")


def create_jobs_table(dynamodb: DynamoDBServiceResource, name: str = TABLE) -> None:
    """The table as template.yaml declares it (key jobId, GSI ByStatus)."""
    from imagejobs_tools.local.template import jobs_table_definition

    dynamodb.create_table(TableName=name, **jobs_table_definition())


@dataclass
class InProcessEnv:
    """moto (in-process) + the simulator: what `handle_job_message` needs."""

    store: JobStore
    provider: TaskSubmitter
    sfn: SFNClient
    s3: S3Client
    settings: IntakeSettings
    sim: Simulator
    api_key: str
    table: Table


def in_process_env(api_key: str) -> Iterator[InProcessEnv]:
    """Generator-based context: `with contextlib.contextmanager(in_process_env)(key) as env`."""
    from imagejobs.config import IntakeSettings
    from imagejobs.provider import ProviderClient, RetryPolicy
    from imagejobs.secrets import ApiKeySource
    from imagejobs.store import JobStore
    from moto import mock_aws

    from imagejobs_tools.sim import SimulatorConfig, start_simulator

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        dynamodb = session.resource("dynamodb")
        create_jobs_table(dynamodb)
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        secrets = session.client("secretsmanager")
        secrets.create_secret(Name=SECRET, SecretString=api_key)
        sfn = session.client("stepfunctions")
        role = "arn:aws:iam::123456789012:role/imagejobs-reliability"
        machine = sfn.create_state_machine(
            name="imagejobs-reliability-jobs",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn=role,
        )["stateMachineArn"]
        sim = start_simulator(
            SimulatorConfig(api_keys={api_key: 1000}, latency=(0.0, 0.01), log_requests=False)
        )
        try:
            settings = IntakeSettings.from_env(
                {
                    "JOBS_TABLE": TABLE,
                    "OUTPUT_BUCKET": BUCKET,
                    "STATE_MACHINE_ARN": machine,
                    "PROVIDER_BASE_URL": sim.url,
                    "PROVIDER_API_KEY_SECRET": SECRET,
                    "POLL_INTERVAL_SECONDS": "0",
                    # Required of IntakeFunction (its handler); handle_job_message never reads it.
                    "JOBS_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/123456789012/imagejobs-reliability",
                }
            )
            provider = ProviderClient(
                sim.url, ApiKeySource(SECRET, secrets), retry=RetryPolicy(max_attempts=1)
            )
            table = dynamodb.Table(TABLE)
            yield InProcessEnv(JobStore(table), provider, sfn, s3, settings, sim, api_key, table)
        finally:
            sim.stop()


def _check_case(case: Case, record: dict[str, Any] | None, result: CaseResult) -> None:
    if record is None:
        result.problems.append("no record")
        return
    result.status = record.get("status")
    if result.status != "REJECTED":
        result.problems.append(f"status {result.status}, expected REJECTED")
        return
    error = record.get("error") or {}
    result.field_errors = dict(error.get("fieldErrors") or {})
    if error.get("source") != case.source:
        result.problems.append(f"error.source {error.get('source')!r}, expected {case.source!r}")
    reasons = result.field_errors.get(case.expect_field)
    if not reasons or not all(isinstance(r, str) and r.strip() for r in reasons):
        result.problems.append(
            f"no reason for field {case.expect_field!r} (got {sorted(result.field_errors)})"
        )
    elif case.reason_contains and not any(case.reason_contains.lower() in r.lower() for r in reasons):
        result.problems.append(f"reasons for {case.expect_field!r} lack {case.reason_contains!r}: {reasons}")


def run_corpus(cases: list[Case], env: InProcessEnv) -> list[CaseResult]:
    from imagejobs import jobs
    from imagejobs.intake import handle_job_message

    parse = functools.partial(jobs.parse_job, resolver=fake_resolver)
    results = []
    for index, case in enumerate(cases):
        result = CaseResult(case, None)
        message_id = f"bad-{index:03d}-{case.name}"[:80]
        try:
            outcome = handle_job_message(
                build_body(case, env.settings.output_bucket),
                message_id,
                store=env.store,
                provider=env.provider,
                sfn=env.sfn,
                s3=env.s3,
                settings=env.settings,
                lease_seconds=60,
                parse=parse,
            )
        except Exception:  # a crash is exactly what this suite looks for
            result.crash = traceback.format_exc(limit=6)
            results.append(result)
            continue
        if not outcome.ack:
            result.problems.append(f"not acknowledged ({outcome.reason}): SQS would retry it")
        job_id = outcome.job_id or message_id
        _check_case(case, env.store.get(job_id), result)
        results.append(result)
    return results


def run_badinput(corpus_dir: Path = DEFAULT_CORPUS, *, limit: int | None = None) -> SuiteReport:
    import contextlib
    import secrets as pysecrets

    report = SuiteReport("badinput")
    started = time.perf_counter()
    cases = load_corpus(corpus_dir)[:limit]
    api_key = "sk_test_reliab_" + pysecrets.token_hex(12)
    with contextlib.contextmanager(in_process_env)(api_key) as env, captured_logs() as logs:
        results = run_corpus(cases, env)
        before_controls = env.sim.admin.key_stats(api_key)
        requests_before = dict(env.sim.admin.stats().get("requests", {}))
        # Controls: two valid jobs through the same path must be charged, or the counting proves nothing.
        from imagejobs.intake import handle_job_message

        control_ok = True
        for n in range(2):
            outcome = handle_job_message(
                json.dumps({"jobId": f"control-{n}", "prompt": "a lighthouse at dawn"}),
                f"control-msg-{n}",
                store=env.store,
                provider=env.provider,
                sfn=env.sfn,
                s3=env.s3,
                settings=env.settings,
            )
            control_ok &= outcome.status == "SUBMITTED"
        after_controls = env.sim.admin.key_stats(api_key)
        records = env.table.scan()["Items"]
    report.wall_seconds = time.perf_counter() - started
    report.jobs_sent = len(cases)
    for result in results:
        key = result.status or ("CRASH" if result.crash else "NO_RECORD")
        report.terminal[key] = report.terminal.get(key, 0) + 1
    crashes = [r for r in results if r.crash]
    failures = [r for r in results if r.problems]
    report.provider_tasks = int(before_controls["tasksCreated"])
    report.credits_spent = int(before_controls["spent"])
    report.credits_refunded = int(before_controls["refunded"])
    report.lost = sum(1 for r in results if r.status is None)
    report.extra["corpus cases"] = len(cases)
    report.extra["by family"] = {
        f: sum(1 for c in cases if c.family == f) for f in sorted({c.family for c in cases})
    }
    report.extra["provider submits (answered 400)"] = int(requests_before.get("submit_image", 0)) + int(
        requests_before.get("submit_video", 0)
    )
    report.check("0 handler crashes", not crashes)
    report.check("100% REJECTED with the expected field and a reason", not failures and not crashes)
    report.check(
        "0 provider tasks and 0 credits for bad input",
        report.provider_tasks == 0 and report.credits_spent == 0,
    )
    report.check(
        "controls: 2 valid jobs SUBMITTED and charged",
        control_ok and int(after_controls["tasksCreated"]) == 2 and int(after_controls["spent"]) > 0,
    )
    leaks = find_secret({"logs": logs.getvalue(), "records": json.dumps(records, default=str)}, api_key)
    report.check("API key absent from captured logs and records", not leaks)
    report.extra["log bytes grepped"] = len(logs.getvalue())
    for result in crashes:
        report.notes.append(
            f"CRASH {result.case.name}: {result.crash.strip().splitlines()[-1] if result.crash else ''}"
        )
    for result in failures:
        report.notes.append(f"{result.case.name}: {'; '.join(result.problems)}")
    return report
