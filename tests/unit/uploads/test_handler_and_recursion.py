"""S3IntakeFunction's handler (partial batch responses) and the template's notification filters in moto."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from imagejobs.uploads import UploadEventError
from moto import mock_aws
from samtranslator.yaml_helper import yaml_parse

from tests.conftest import REPO_ROOT, FakeLambdaContext
from tests.unit.domain.fakes import create_jobs_table
from tests.unit.uploads.conftest import BUCKET, REGION, png_bytes, s3_event


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": f"r{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:uploads",
                "awsRegion": REGION,
            }
            for index, body in enumerate(bodies)
        ]
    }


@pytest.fixture
def handler_env(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, load_handler: Callable[[str], ModuleType]
) -> Iterator[tuple[ModuleType, Any, str]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        uploads_url = sqs.create_queue(QueueName="uploads", Attributes={"VisibilityTimeout": "5400"})[
            "QueueUrl"
        ]
        create_jobs_table(boto3.resource("dynamodb", region_name=REGION), function_env["JOBS_TABLE"])
        monkeypatch.setenv("JOBS_QUEUE_URL", queue_url)
        monkeypatch.setenv("UPLOADS_QUEUE_URL", uploads_url)
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        yield load_handler("s3_intake"), s3, queue_url


def test_handler_acks_test_events_and_uploads_and_retries_only_the_broken_record(
    handler_env: tuple[ModuleType, Any, str],
) -> None:
    module, s3, queue_url = handler_env
    etag = s3.put_object(Bucket=BUCKET, Key="inputs/h.png", Body=png_bytes(), Metadata={"prompt": "p"})[
        "ETag"
    ]
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    event = sqs_event(test_event, s3_event("inputs/h.png", etag=etag), "not json at all")
    response = module.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    sqs = boto3.client("sqs", region_name=REGION)
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"])["inputImageUrls"] == [f"s3://{BUCKET}/inputs/h.png"]


def received_upload_event(body: str) -> dict[str, Any]:
    """`body` sent to the uploads queue and received as the event source would (hidden for 5,400 s)."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName="uploads")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)
    [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    event = sqs_event(body)
    event["Records"][0].update(
        messageId=message["MessageId"],
        receiptHandle=message["ReceiptHandle"],
        attributes={"ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"]},
    )
    return event


def visible_uploads() -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName="uploads")["QueueUrl"]
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
    return list(received.get("Messages", []))


def test_a_batch_paused_for_time_is_sent_again_at_once_and_its_receive_acknowledged(
    handler_env: tuple[ModuleType, Any, str],
) -> None:
    module, s3, _ = handler_env
    lines = "".join(json.dumps({"prompt": f"p{n}"}) + "\n" for n in range(30))
    etag = s3.put_object(Bucket=BUCKET, Key="batches/long.jsonl", Body=lines.encode())["ETag"]
    body = s3_event("batches/long.jsonl", etag=etag)
    # 20 s left: under the 30 s the function keeps for saving its checkpoint.
    response = module.lambda_handler(received_upload_event(body), FakeLambdaContext(remaining_ms=20_000))
    assert response == {"batchItemFailures": []}
    # A new message (receive count 1 again), visible now, not after the queue's 5,400 s.
    [again] = visible_uploads()
    assert again["Body"] == body and again["Attributes"]["ApproximateReceiveCount"] == "1"
    # The next invocation, with time, resumes from the checkpoint and finishes the batch.
    event = sqs_event(body)
    assert module.lambda_handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="batches/long.jsonl.report.json")["Body"].read())
    assert report["status"] == "COMPLETE" and report["enqueued"] == 30


def test_a_failed_event_is_offered_again_after_its_retry_delay_not_the_queues_timeout(
    handler_env: tuple[ModuleType, Any, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = handler_env[0]
    # The real first delay is 30 s; 0 lets the test see the event come back without waiting.
    monkeypatch.setattr("imagejobs.uploads.dispatch.FAILED_EVENT_RETRY_SECONDS", (0.0, 120.0))
    event = received_upload_event("not json at all")
    response = module.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    # The failure is in the function's log, with its traceback and when it comes back.
    [logged] = [r for r in caplog.records if r.getMessage() == "upload event failed; offered again later"]
    assert logged.levelname == "ERROR" and logged.retry_in_seconds == 0.0  # type: ignore[attr-defined]
    assert logged.exc_info is not None and logged.exc_info[0] is UploadEventError
    [again] = visible_uploads()
    assert again["MessageId"] == event["Records"][0]["messageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_failed_event_retry_delays_grow_with_the_receive_count() -> None:
    from imagejobs.uploads import FAILED_EVENT_RETRY_SECONDS, failed_event_retry_seconds

    delays = [failed_event_retry_seconds(n) for n in (None, 1, 2, 3, 4, 5, 9)]
    assert delays == [30.0, 30.0, 120.0, 600.0, 1800.0, 1800.0, 1800.0]
    assert sum(FAILED_EVENT_RETRY_SECONDS) < 5400  # all of them, within one of the queue's timeouts


def _template_notifications() -> dict[str, Any]:
    """The OutputBucket's NotificationConfiguration from template.yaml, in the S3 API's shape."""
    template = yaml_parse((REPO_ROOT / "template.yaml").read_text(encoding="utf-8"))
    defaults = {name: p.get("Default") for name, p in template["Parameters"].items()}
    config = template["Resources"]["OutputBucket"]["Properties"]["NotificationConfiguration"]

    def value(node: Any) -> Any:
        return defaults[node["Ref"]] if isinstance(node, dict) and "Ref" in node else node

    return {
        "QueueConfigurations": [
            {
                "QueueArn": f"arn:aws:sqs:{REGION}:123456789012:uploads",
                "Events": [entry["Event"]],
                "Filter": {
                    "Key": {
                        "FilterRules": [
                            {"Name": rule["Name"], "Value": value(rule["Value"])}
                            for rule in entry["Filter"]["S3Key"]["Rules"]
                        ]
                    }
                },
            }
            for entry in config["QueueConfigurations"]
        ]
    }


def test_outputs_and_reports_trigger_nothing_uploads_and_batches_do() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="uploads")["QueueUrl"]
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration=_template_notifications()
        )

        def drain() -> list[str]:
            keys = []
            while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
                for message in messages:
                    body = json.loads(message["Body"])
                    keys += [r["s3"]["object"]["key"] for r in body.get("Records", [])]
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return keys

        drain()  # the s3:TestEvent sent when the configuration is applied
        for key in (
            "outputs/job-1/0.png",  # what StoreOutputsFunction writes (OutputPrefix)
            "team-a/outputs/job-2/0.png",  # a job's own outputPrefix
            "recipes/product.json",
        ):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert drain() == []
        s3.put_object(Bucket=BUCKET, Key="inputs/a.png", Body=png_bytes())
        s3.put_object(Bucket=BUCKET, Key="batches/b.jsonl", Body=b"{}\n")
        # Everything under batches/ notifies: a report (beside its batch) is ignored by the function
        # (test_images.py, keys outside the triggers), any other file is recorded REJECTED.
        s3.put_object(Bucket=BUCKET, Key="batches/b.jsonl.report.json", Body=b"{}")
        s3.put_object(Bucket=BUCKET, Key="batches/notes.txt", Body=b"x")
        assert sorted(k.replace("%2F", "/") for k in drain()) == [
            "batches/b.jsonl",
            "batches/b.jsonl.report.json",
            "batches/notes.txt",
            "inputs/a.png",
        ]
