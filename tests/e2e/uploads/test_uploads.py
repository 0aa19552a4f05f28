"""S3 upload triggers end to end: photos and JSONL batches uploaded to the local stack's bucket."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from boto3.dynamodb.types import TypeDeserializer
from PIL import Image

from tests.e2e.conftest import API_KEY, TERMINAL, RunningStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("localstack")]


def photo(size: tuple[int, int] = (40, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def records_where(stack: RunningStack, predicate: Any) -> list[dict[str, Any]]:
    """Every job record matching ``predicate`` (a scan: the local table is small)."""
    client = stack.client("dynamodb")
    deserializer = TypeDeserializer()
    found = []
    for page in client.get_paginator("scan").paginate(TableName=stack.outputs["JobsTableName"]):
        for item in page["Items"]:
            record = {key: deserializer.deserialize(value) for key, value in item.items()}
            if predicate(record):
                found.append(record)
    return found


def records_for_upload(stack: RunningStack, uri: str) -> list[dict[str, Any]]:
    return records_where(stack, lambda r: uri in ((r.get("request") or {}).get("inputImageUrls") or []))


def unfinished_story(stack: RunningStack, records: list[dict[str, Any]]) -> str:
    """What happened to every job that did not complete: its status history and its errors."""
    ids = {r["jobId"] for r in records if r["status"] != "COMPLETED"}
    story = ["jobs that did not complete:"]
    for record in records_where(stack, lambda r: r["jobId"] in ids):
        fields = ("jobId", "status", "statusHistory", "error", "lastSubmitError", "taskId", "executions")
        story.append(json.dumps({name: record.get(name) for name in fields}, default=str))
    return "\n".join(story)


def queue_idle(stack: RunningStack, queue_output: str = "UploadsQueueUrl") -> bool:
    """No message waiting or in flight on the queue named by that stack output."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.outputs[queue_output],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"])
        + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        == 0
    )


def s3_event_body(bucket: str, key: str, etag: str) -> str:
    """The notification S3 sends for a PUT (key URL-encoded as moto does, "/" included)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe=""), "size": 1, "eTag": etag, "sequencer": "00E2E"},
        },
    }
    return json.dumps({"Records": [record]})


def upload_photo(stack: RunningStack, key: str, prompt: str, **metadata: str) -> str:
    response = stack.client("s3").put_object(
        Bucket=stack.outputs["OutputBucketName"],
        Key=key,
        Body=photo(),
        ContentType="image/png",
        Metadata={"prompt": prompt, **metadata},
    )
    return str(response["ETag"]).strip('"')


def test_photo_upload_becomes_a_completed_job_fed_a_presigned_url_of_the_photo(stack: RunningStack) -> None:
    bucket = stack.outputs["OutputBucketName"]
    key = f"{stack.outputs['InputsPrefix']}e2e photos/bouteille é {uuid.uuid4().hex[:8]}.png"
    upload_photo(stack, key, "same bottle on ivory paper", **{"aspect-ratio": "4:5"})
    uri = f"s3://{bucket}/{key}"
    [record] = wait_for(
        lambda: records_for_upload(stack, uri), timeout=60, what=f"a job for {key}", interval=1
    )
    record = stack.wait_terminal(record["jobId"])
    assert record["status"] == "COMPLETED", record
    assert record["jobId"].startswith("up-") and record["request"]["aspectRatio"] == "4:5"
    [task] = [t for t in stack.sim.tasks() if t.get("taskId") == record["taskId"]]
    [fetched] = task["inputsFetched"]
    # The simulator fetched the photo through a short-lived presigned GET URL of exactly that key.
    assert fetched["ok"] and fetched["contentType"] == "image/png", fetched
    assert quote(key) in fetched["url"] and "Expires=" in fetched["url"] and "Signature=" in fetched["url"]
    assert task["prompt"] == "same bottle on ivory paper"


def test_unusable_upload_is_recorded_rejected_with_the_reason(stack: RunningStack) -> None:
    bucket = stack.outputs["OutputBucketName"]
    key = f"{stack.outputs['InputsPrefix']}e2e-{uuid.uuid4().hex[:8]}.png"
    stack.client("s3").put_object(
        Bucket=bucket, Key=key, Body=b"%PDF-1.7 not a photo", Metadata={"prompt": "p"}
    )
    [record] = wait_for(
        lambda: records_for_upload(stack, f"s3://{bucket}/{key}"),
        timeout=60,
        what=f"a record for {key}",
        interval=1,
    )
    assert record["status"] == "REJECTED"
    assert "not an image" in record["error"]["fieldErrors"]["upload"][0]


def test_the_same_s3_event_delivered_twice_makes_no_extra_job(stack: RunningStack) -> None:
    bucket = stack.outputs["OutputBucketName"]
    key = f"{stack.outputs['InputsPrefix']}e2e-dup-{uuid.uuid4().hex[:8]}.png"
    spent_before = int(stack.sim.key_stats(API_KEY)["spent"])
    etag = upload_photo(stack, key, "delivered three times")
    uri = f"s3://{bucket}/{key}"
    [record] = wait_for(
        lambda: records_for_upload(stack, uri), timeout=60, what=f"a job for {key}", interval=1
    )
    # S3 delivered it once; deliver the same event twice more, as an at-least-once redelivery would.
    sqs = stack.client("sqs")
    for _ in range(2):
        sqs.send_message(
            QueueUrl=stack.outputs["UploadsQueueUrl"], MessageBody=s3_event_body(bucket, key, etag)
        )
    record = stack.wait_terminal(record["jobId"])
    wait_for(lambda: queue_idle(stack), timeout=30, what="the redelivered events handled")
    wait_for(lambda: queue_idle(stack) and queue_idle(stack, "JobsQueueUrl"), timeout=30, what="queues idle")
    assert record["status"] == "COMPLETED"
    assert [r["jobId"] for r in records_for_upload(stack, uri)] == [record["jobId"]]
    assert record["submitAttempts"] == 1
    assert int(stack.sim.key_stats(API_KEY)["spent"]) - spent_before == 3
    assert sum(1 for t in stack.sim.tasks() if t.get("prompt") == "delivered three times") == 1


def test_writing_outputs_triggers_nothing(stack: RunningStack) -> None:
    bucket = stack.outputs["OutputBucketName"]
    s3 = stack.client("s3")
    tag = uuid.uuid4().hex[:8]
    # Objects that would make jobs if they triggered: a usable prompt, a valid image, valid JSONL.
    quiet = {
        f"outputs/e2e-{tag}/0.png": photo(),
        f"{stack.outputs['BatchesPrefix']}e2e-{tag}.jsonl.report.json": b'{"prompt": "report"}\n',
        f"recipes/e2e-{tag}.json": b'{"prompt": "recipe"}',
    }
    for key, body in quiet.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"prompt": f"quiet {tag}"})
    # Then a sentinel under the inputs prefix, which does trigger.
    sentinel = f"{stack.outputs['InputsPrefix']}e2e-sentinel-{tag}.png"
    upload_photo(stack, sentinel, f"sentinel {tag}")
    wait_for(
        lambda: records_for_upload(stack, f"s3://{bucket}/{sentinel}"),
        timeout=60,
        what="the sentinel job",
        interval=1,
    )
    wait_for(lambda: queue_idle(stack), timeout=30, what="the uploads queue idle")
    made = records_where(stack, lambda r: tag in json.dumps(r.get("request") or {}, default=str))
    assert [r["request"]["prompt"] for r in made] == [f"sentinel {tag}"]
    # And the bucket notifies only the two trigger prefixes (any file under batches/: the function
    # ignores its own reports and records anything else that is not *.jsonl REJECTED).
    configuration = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    filters = sorted(
        json.dumps({r["Name"].lower(): r["Value"] for r in c["Filter"]["Key"]["FilterRules"]}, sort_keys=True)
        for c in configuration
    )
    assert filters == sorted(
        [
            json.dumps({"prefix": stack.outputs["InputsPrefix"]}),
            json.dumps({"prefix": stack.outputs["BatchesPrefix"]}),
        ]
    )


BAD = {
    13: ('{"aspectRatio": "1:1"}', "prompt"),
    99: ('{"prompt": "x", "aspectRatio": "7:3"}', "aspectRatio"),
    200: ("{broken json", "body"),
    321: ('{"prompt": "x", "colour": "red"}', "colour"),
    404: ('{"prompt": "x", "outputPrefix": "../escape"}', "outputPrefix"),
    505: ('{"prompt": "x", "outputPrefix": "inputs/loop/"}', "outputPrefix"),
    606: ('{"prompt": "x", "inputImageUrls": ["http://169.254.169.254/"]}', "inputImageUrls"),
    707: ('{"prompt": "x", "jobId": "bad id!"}', "jobId"),
    808: ("[1, 2]", "body"),
    1000: ('{"prompt": ""}', "prompt"),
}


# The figure is 1,000 lines (990 jobs through the whole local pipeline: ~240 s on 2 shared cores);
# the suite runs 100 lines with the same 10 bad ones spread over the file to stay inside its time budget.
# Full size: IMAGEJOBS_E2E_BATCH_LINES=1000 pytest tests/e2e/uploads -k jsonl -s
BATCH_LINES = int(os.environ.get("IMAGEJOBS_E2E_BATCH_LINES", "100"))
BAD_AT = {max(1, n * BATCH_LINES // 1000): case for n, case in BAD.items()}
assert len(BAD_AT) == len(BAD), "IMAGEJOBS_E2E_BATCH_LINES is too small to spread the 10 bad lines"
GOOD_LINES = BATCH_LINES - len(BAD_AT)


@pytest.mark.timeout(600)
def test_jsonl_batch_with_10_bad_lines_makes_a_job_per_good_line_and_a_report(stack: RunningStack) -> None:
    tag = uuid.uuid4().hex[:8]
    key = f"{stack.outputs['BatchesPrefix']}e2e-{tag}/catalog.jsonl"
    lines = [
        BAD_AT[n][0] if n in BAD_AT else json.dumps({"prompt": f"{tag} item {n}", "aspectRatio": "1:1"})
        for n in range(1, BATCH_LINES + 1)
    ]
    stack.sim.set_credits(API_KEY, 1_000_000)  # 3 credits per job
    # Tasks finish at once: one poll per execution, so the 990 executions cost as little as possible.
    stack.sim.configure(latency=(0.0, 0.0))
    try:
        _run_batch(stack, key, lines)
    finally:
        stack.sim.configure(latency=(0.0, 0.05))


def _run_batch(stack: RunningStack, key: str, lines: list[str]) -> None:
    bucket = stack.outputs["OutputBucketName"]
    s3 = stack.client("s3")
    started = time.monotonic()
    response = s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())

    def report() -> dict[str, Any] | None:
        try:
            body = s3.get_object(Bucket=bucket, Key=key + ".report.json")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        document = json.loads(body)
        return document if document["status"] == "COMPLETE" else None

    document = wait_for(report, timeout=60, what="the batch report", interval=1.0)
    counts = (document["lines"], document["enqueued"], document["badLineCount"])
    assert counts == (BATCH_LINES, GOOD_LINES, 10)
    assert {e["line"]: e["field"] for e in document["badLines"]} == {n: f for n, (_, f) in BAD_AT.items()}
    prefix = document["jobIdPrefix"]

    def batch_records() -> list[dict[str, Any]]:
        # Filtered and projected server-side: this runs every few seconds over ~2,000 items.
        client = stack.client("dynamodb")
        found = []
        pages = client.get_paginator("scan").paginate(
            TableName=stack.outputs["JobsTableName"],
            FilterExpression="begins_with(jobId, :prefix)",
            ProjectionExpression="jobId, #status",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":prefix": {"S": prefix}},
        )
        for page in pages:
            found += [{"jobId": i["jobId"]["S"], "status": i["status"]["S"]} for i in page["Items"]]
        return found

    def all_terminal() -> list[dict[str, Any]] | None:
        found = batch_records()
        # Every line has its record: a job per good line, REJECTED per bad line (docs/batches.md).
        return found if len(found) == BATCH_LINES and all(r["status"] in TERMINAL for r in found) else None

    # Waiting for every job keeps the load from spilling into later tests.
    finished = wait_for(all_terminal, timeout=540, what=f"{BATCH_LINES} batch records terminal", interval=2.0)
    elapsed = time.monotonic() - started
    print(f"\n{BATCH_LINES}-line batch: {GOOD_LINES} jobs terminal {elapsed:.1f} s after the upload")
    by_id = {r["jobId"]: r["status"] for r in finished}
    expected = {f"{prefix}{n}": "REJECTED" if n in BAD_AT else "COMPLETED" for n in range(1, BATCH_LINES + 1)}
    assert by_id == expected, unfinished_story(stack, finished)

    # The same S3 event again: the report says COMPLETE for this version, so nothing is enqueued.
    etag = str(response["ETag"]).strip('"')
    stack.client("sqs").send_message(
        QueueUrl=stack.outputs["UploadsQueueUrl"], MessageBody=s3_event_body(bucket, key, etag)
    )
    wait_for(lambda: queue_idle(stack) and queue_idle(stack, "JobsQueueUrl"), timeout=30, what="queues idle")
    assert len(batch_records()) == BATCH_LINES
