"""Each handler, loaded by path, driven with the sample events in events/ against in-process moto."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from imagejobs.config import ConfigError, PollSettings
from imagejobs.copier import OutputCopier
from imagejobs.provider import ProviderServerError, TaskStatus
from imagejobs.store import JobStore
from moto import mock_aws

from tests.conftest import REPO_ROOT, FakeLambdaContext
from tests.unit.domain.fakes import FakeProvider, create_jobs_table, snapshot
from tests.unit.domain.test_copier import JPEG, FakeHttp

EVENTS = REPO_ROOT / "events"
LOCAL_EVENTS = Path(__file__).parent / "events"
DEMO_JOB = "demo-cat-0001"


def event(name: str) -> dict[str, Any]:
    path = EVENTS / name if (EVENTS / name).exists() else LOCAL_EVENTS / name
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def cdn_resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
    if host != "static.example-cdn.com":
        raise socket.gaierror("unknown host")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]


class Aws:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.table = create_jobs_table(boto3.resource("dynamodb"), env["JOBS_TABLE"])
        self.store = JobStore(self.table)
        self.s3 = boto3.client("s3")
        self.s3.create_bucket(Bucket=env["OUTPUT_BUCKET"])
        self.sfn = boto3.client("stepfunctions")
        self.sfn.create_state_machine(
            name=env["STATE_MACHINE_ARN"].rsplit(":", 1)[1],
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/imagejobs-sfn",
        )

    def submitted_demo_job(self) -> None:
        self.store.create_received(
            DEMO_JOB, {"jobId": DEMO_JOB, "kind": "image", "prompt": "cat", "metadata": {"team": "design"}}
        )
        self.store.claim_for_submit(DEMO_JOB, 60)
        self.store.mark_submitted(DEMO_JOB, "tsk_01J9EXAMPLE0000000000000000", 3, "arn:exec")


@pytest.fixture
def aws(function_env: dict[str, str]) -> Iterator[Aws]:
    with mock_aws():
        yield Aws(function_env)


@pytest.fixture
def handler(
    load_handler: Callable[[str], ModuleType], aws: Aws
) -> Callable[[str, FakeProvider | None], ModuleType]:
    def load(name: str, provider: FakeProvider | None = None) -> ModuleType:
        module = load_handler(name)
        if provider is not None:
            module.runtime.provider = provider  # no network in unit tests
        return module

    return load


def test_handler_modules_load_under_distinct_names(handler: Callable[..., ModuleType]) -> None:
    names = {handler(n).__name__ for n in ("intake", "poll", "store_outputs", "finalize")}
    assert names == {
        "imagejobs_fn_intake",
        "imagejobs_fn_poll",
        "imagejobs_fn_store_outputs",
        "imagejobs_fn_finalize",
    }


def test_intake_sample_job_is_submitted(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    provider = FakeProvider()
    module = handler("intake", provider)
    response = module.lambda_handler(event("sqs_job.json"), lambda_context)
    assert response == {"batchItemFailures": []}
    record = aws.store.get(DEMO_JOB)
    assert record is not None and record["status"] == "SUBMITTED"
    assert record["request"]["metadata"] == {"team": "design", "ticket": "DES-42"}
    assert len(provider.submissions) == 1
    executions = aws.sfn.list_executions(stateMachineArn=aws.env["STATE_MACHINE_ARN"])["executions"]
    assert [e["name"] for e in executions] == [DEMO_JOB]
    # The lease is derived from the function's remaining time (60 s) plus a margin.
    assert module.lease_seconds(lambda_context) == 90.0


def test_intake_invalid_messages_are_acknowledged_and_recorded(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    provider = FakeProvider()
    response = handler("intake", provider).lambda_handler(event("sqs_invalid_job.json"), lambda_context)
    assert response == {"batchItemFailures": []}
    assert provider.submissions == []
    for record in event("sqs_invalid_job.json")["Records"]:
        stored = aws.store.get(record["messageId"])
        assert stored is not None and stored["status"] == "REJECTED"
        assert stored["error"]["fieldErrors"]


def test_intake_reports_only_the_failed_items(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    batch = copy.deepcopy(event("sqs_job.json"))
    second = copy.deepcopy(batch["Records"][0])
    second["messageId"] = "second-message"
    second["body"] = json.dumps({"jobId": "job-503", "prompt": "p"})
    batch["Records"].append(second)

    class FailSecond(FakeProvider):
        def submit_image(self, body: dict[str, Any]) -> Any:
            if len(self.submissions) == 1:
                self.submissions.append(("image", body))
                raise ProviderServerError(503)
            return super().submit_image(body)

    response = handler("intake", FailSecond()).lambda_handler(batch, lambda_context)
    assert response == {"batchItemFailures": [{"itemIdentifier": "second-message"}]}
    assert aws.store.get("job-503")["status"] == "RECEIVED"  # type: ignore[index]


@pytest.mark.parametrize(("receive_count", "dead_lettered"), [("4", False), ("5", True)])
def test_intake_notes_on_the_record_that_the_last_receive_failed(
    handler: Callable[..., ModuleType],
    aws: Aws,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    receive_count: str,
    dead_lettered: bool,
) -> None:
    # The queue moves the message to the DLQ after 5 receives (JobsMaxReceiveCount).
    monkeypatch.setenv("JOBS_MAX_RECEIVE_COUNT", "5")
    batch = copy.deepcopy(event("sqs_job.json"))
    batch["Records"][0]["attributes"]["ApproximateReceiveCount"] = receive_count
    module = handler("intake", FakeProvider(submit_error=ProviderServerError(500)))
    response = module.lambda_handler(batch, lambda_context)
    assert response == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
    record = aws.store.get(DEMO_JOB)
    assert record is not None and record["status"] == "RECEIVED"
    assert ("deadLettered" in record) is dead_lettered
    if dead_lettered:
        assert record["deadLettered"]["receiveCount"] == 5


def test_intake_all_failed_batch_still_returns_the_partial_response(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    response = handler("intake", FakeProvider(submit_error=ProviderServerError(500))).lambda_handler(
        event("sqs_job.json"), lambda_context
    )
    assert response == {
        "batchItemFailures": [{"itemIdentifier": event("sqs_job.json")["Records"][0]["messageId"]}]
    }


def test_intake_duplicate_of_a_claimed_job_is_offered_again_soon(
    handler: Callable[..., ModuleType],
    aws: Aws,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="imagejobs-JobsQueue-EXAMPLE")["QueueUrl"]
    monkeypatch.setenv("JOBS_QUEUE_URL", queue_url)
    sqs.send_message(QueueUrl=queue_url, MessageBody=event("sqs_job.json")["Records"][0]["body"])
    received = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=1200)["Messages"][0]
    batch = copy.deepcopy(event("sqs_job.json"))
    batch["Records"][0].update(receiptHandle=received["ReceiptHandle"], messageId=received["MessageId"])
    # Another worker holds the submit claim for this job.
    aws.store.create_received(DEMO_JOB, {"jobId": DEMO_JOB, "kind": "image", "prompt": "cat"})
    aws.store.claim_for_submit(DEMO_JOB, 600)
    # The real delay is 10 s; 0 lets the test see the message come back without waiting.
    monkeypatch.setattr("imagejobs.intake.CLAIM_CONTENTION_RETRY_SECONDS", 0.0)

    response = handler("intake", FakeProvider()).lambda_handler(batch, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}
    # Without the shortened visibility the message would stay hidden for 1200 s.
    again = sqs.receive_message(QueueUrl=queue_url).get("Messages", [])
    assert [m["MessageId"] for m in again] == [received["MessageId"]]


def test_poll_sample_event(handler: Callable[..., ModuleType], lambda_context: FakeLambdaContext) -> None:
    provider = FakeProvider(snapshots=[snapshot("tsk_01J9EXAMPLE0000000000000000")])
    out = handler("poll", provider).lambda_handler(event("poll.json"), lambda_context)
    assert out["polls"] == 1 and out["poll"]["status"] == "PENDING"
    assert out["taskId"] == event("poll.json")["taskId"]
    assert provider.polls == ["tsk_01J9EXAMPLE0000000000000000"]


def test_poll_transient_error_surfaces_as_provider_transient_error(
    handler: Callable[..., ModuleType], lambda_context: FakeLambdaContext
) -> None:
    module = handler("poll", FakeProvider(task_error=ProviderServerError(502)))
    with pytest.raises(Exception) as excinfo:
        module.lambda_handler(event("poll.json"), lambda_context)
    assert type(excinfo.value).__name__ == "ProviderTransientError"  # the name Step Functions matches


def test_store_outputs_sample_event(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    aws.submitted_demo_job()
    module = handler("store_outputs")
    session = requests.Session()
    session.mount(
        "https://", FakeHttp({"https://static.example-cdn.com/outputs/abc123.jpg": (200, {}, JPEG)})
    )
    module.runtime.copier = OutputCopier(
        session, module.runtime.s3, aws.env["OUTPUT_BUCKET"], max_bytes=1024 * 1024, resolver=cdn_resolver
    )
    out = module.lambda_handler(event("store_outputs.json"), lambda_context)
    assert out["status"] == "COMPLETED"
    record = aws.store.get(DEMO_JOB)
    assert record is not None and record["status"] == "COMPLETED"
    [output] = record["outputs"]
    assert output["key"] == f"outputs/{DEMO_JOB}/0.jpg"
    body = aws.s3.get_object(Bucket=aws.env["OUTPUT_BUCKET"], Key=output["key"])["Body"].read()
    assert body == JPEG


@pytest.mark.parametrize(
    ("name", "status", "source", "code"),
    [
        ("finalize_failed.json", "FAILED", "provider", "STORAGE_ERROR"),
        ("finalize_timed_out.json", "TIMED_OUT", "pipeline", "TIMED_OUT"),
        ("finalize_error.json", "FAILED", "pipeline", "TaskNotFound"),
    ],
)
def test_finalize_sample_events(
    handler: Callable[..., ModuleType],
    aws: Aws,
    lambda_context: FakeLambdaContext,
    name: str,
    status: str,
    source: str,
    code: str,
) -> None:
    aws.submitted_demo_job()
    out = handler("finalize").lambda_handler(event(name), lambda_context)
    assert out["status"] == status
    record = aws.store.get(DEMO_JOB)
    assert record is not None
    assert (record["status"], record["error"]["source"], record["error"]["code"]) == (status, source, code)


def subscribe_queue(bus: str) -> tuple[Any, str]:
    """An SQS queue receiving every event on `bus` (what a subscriber's rule would do)."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="subscriber")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.create_event_bus(Name=bus)
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["imagejobs"]}))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return sqs, url


def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_job_events_publishes_the_sample_streams_state_changes(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    sqs, url = subscribe_queue(aws.env["EVENT_BUS_NAME"])
    response = handler("job_events").lambda_handler(event("dynamodb_stream_records.json"), lambda_context)
    assert response == {"batchItemFailures": []}
    got = sorted(received(sqs, url), key=lambda e: e["detail"]["eventId"])
    # Four stream records: SUBMITTED, a poll count (not a state change), COMPLETED, a REJECTED insert.
    assert [e["detail"]["eventId"] for e in got] == [
        "bad-0001/REJECTED",
        f"{DEMO_JOB}/COMPLETED",
        f"{DEMO_JOB}/SUBMITTED",
    ]
    assert {(e["source"], e["detail-type"]) for e in got} == {("imagejobs", "Job State Change")}
    completed = got[1]["detail"]
    assert completed["outputs"][0]["key"] == f"outputs/{DEMO_JOB}/1.png" and completed["creditsUsed"] == 3


def test_job_events_reports_the_record_it_could_not_publish(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    # No bus of that name: EventBridge refuses every entry, so every state change is a batch item failure.
    response = handler("job_events").lambda_handler(event("dynamodb_stream_records.json"), lambda_context)
    records = event("dynamodb_stream_records.json")["Records"]
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert failed == {records[i]["dynamodb"]["SequenceNumber"] for i in (0, 2, 3)}


def test_job_events_leaves_the_records_it_has_no_time_for_to_the_retry(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext, monkeypatch: Any
) -> None:
    sqs, url = subscribe_queue(aws.env["EVENT_BUS_NAME"])
    app = handler("job_events")
    records = event("dynamodb_stream_records.json")["Records"]
    # Time runs short after the second record: the third and fourth are left untouched.
    remaining = iter([60_000, 60_000, 4_000, 4_000])
    monkeypatch.setattr(lambda_context, "get_remaining_time_in_millis", lambda: next(remaining))
    response = app.lambda_handler({"Records": records}, lambda_context)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [
        r["dynamodb"]["SequenceNumber"] for r in records[2:]
    ]
    assert [e["detail"]["eventId"] for e in received(sqs, url)] == [f"{DEMO_JOB}/SUBMITTED"]


def test_runtime_builds_settings_and_clients_from_the_environment(
    handler: Callable[..., ModuleType], aws: Aws
) -> None:
    runtime = handler("poll").runtime
    assert runtime.settings == PollSettings.from_env(aws.env)
    assert runtime.provider.base_url == aws.env["PROVIDER_BASE_URL"]
    assert runtime.provider is runtime.provider  # built once, cached
    assert "provider-api-key" not in repr(runtime.provider)
    # PollFunction only talks to the provider: its runtime has no job store to build.
    assert not hasattr(runtime, "store")


# The variables without which each function refuses to start (the others have defaults).
REQUIRED = {
    "intake": {
        "JOBS_TABLE",
        "OUTPUT_BUCKET",
        "STATE_MACHINE_ARN",
        "PROVIDER_BASE_URL",
        "PROVIDER_API_KEY_SECRET",
        "JOBS_QUEUE_URL",
    },
    "poll": {"PROVIDER_BASE_URL", "PROVIDER_API_KEY_SECRET"},
    "store_outputs": {"JOBS_TABLE", "OUTPUT_BUCKET"},
    "finalize": {"JOBS_TABLE"},
    "s3_intake": {"JOBS_TABLE", "OUTPUT_BUCKET", "JOBS_QUEUE_URL", "UPLOADS_QUEUE_URL"},
    "job_events": {"EVENT_BUS_NAME", "WEBHOOK_QUEUE_URL", "JOBS_TABLE", "BATCH_RESULTS_QUEUE_URL"},
    "batch_results": {"JOBS_TABLE"},
    "webhook": {"WEBHOOK_QUEUE_URL", "WEBHOOK_DEAD_LETTER_QUEUE_URL", "WEBHOOK_SIGNING_SECRET"},
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_missing_variable_fails_the_init_naming_it(
    name: str,
    load_handler: Callable[[str], ModuleType],
    function_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = set()
    for variable in function_env:
        with monkeypatch.context() as scoped:
            scoped.delenv(variable)
            try:
                load_handler(name)
            except ConfigError as error:
                assert (error.variable, error.reason) == (variable, "is required but missing or empty")
                refused.add(variable)
    assert refused == REQUIRED[name]


def test_an_invalid_variable_fails_the_init_before_any_invocation(
    load_handler: Callable[[str], ModuleType], function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_OUTPUT_BYTES", "lots")
    with pytest.raises(ConfigError, match="environment variable MAX_OUTPUT_BYTES: must be a number"):
        load_handler("store_outputs")


def test_completed_snapshot_reaches_store_outputs_shape(
    handler: Callable[..., ModuleType], lambda_context: FakeLambdaContext
) -> None:
    done = snapshot(
        "tsk_01J9EXAMPLE0000000000000000",
        TaskStatus.COMPLETED,
        output_urls=("https://static.example-cdn.com/outputs/abc123.jpg",),
    )
    out = handler("poll", FakeProvider(snapshots=[done])).lambda_handler(event("poll.json"), lambda_context)
    expected = event("store_outputs.json")
    assert set(out["poll"]) == set(expected["poll"])
    assert out["poll"]["outputUrls"] == expected["poll"]["outputUrls"]


def test_intake_with_an_empty_secret_retries_with_an_actionable_error(
    handler: Callable[..., ModuleType], aws: Aws, lambda_context: FakeLambdaContext
) -> None:
    boto3.client("secretsmanager").create_secret(Name=aws.env["PROVIDER_API_KEY_SECRET"], SecretString=" ")
    module = handler("intake")  # the real provider client: the key is fetched before any request
    sample = event("sqs_job.json")
    response = module.lambda_handler(sample, lambda_context)
    assert response == {"batchItemFailures": [{"itemIdentifier": sample["Records"][0]["messageId"]}]}
    record = aws.store.get(DEMO_JOB)
    assert record is not None and record["status"] == "RECEIVED"
    assert "put-secret-value" in record["lastSubmitError"]["message"]
