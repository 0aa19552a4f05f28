"""End to end through the public endpoints: SQS in, DynamoDB record and S3 images out."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY, RunningStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("localstack")]


def new_job_id(label: str) -> str:
    return f"e2e-{label}-{uuid.uuid4().hex[:8]}"


def credits_spent(stack: RunningStack) -> int:
    return int(stack.sim.key_stats(API_KEY)["net"])


@pytest.mark.parametrize(("ratio", "expected"), [("16:9", 16 / 9), ("9:16", 9 / 16), ("1:1", 1.0)])
def test_job_completes_with_images_matching_the_aspect_ratio(
    stack: RunningStack, ratio: str, expected: float
) -> None:
    job_id = new_job_id("t2i")
    stack.send({"jobId": job_id, "prompt": "a lighthouse at dawn", "aspectRatio": ratio})
    record = stack.wait_terminal(job_id)
    assert record["status"] == "COMPLETED", record
    assert record["creditsUsed"] == 3
    statuses = [entry["status"] for entry in record["statusHistory"]]
    assert statuses[0] == "RECEIVED" and statuses[-1] == "COMPLETED" and "SUBMITTED" in statuses
    (output,) = record["outputs"]
    assert output["bucket"] == stack.outputs["OutputBucketName"]
    body = stack.client("s3").get_object(Bucket=output["bucket"], Key=output["key"])["Body"].read()
    assert len(body) == output["bytes"]
    image = Image.open(io.BytesIO(body))
    image.load()  # decodes fully
    width, height = image.size
    assert abs(width / height - expected) < 0.02, (width, height)


def test_local_up_shows_each_published_event(stack: RunningStack) -> None:
    job_id = new_job_id("shown")
    stack.send({"jobId": job_id, "prompt": "a lighthouse at dawn"})
    assert stack.wait_terminal(job_id)["status"] == "COMPLETED"
    wait_for(
        lambda: f"Job State Change  {job_id}/COMPLETED  SUBMITTED -> COMPLETED" in stack.log_path.read_text(),
        30,
        what=f"--show-events' line for {job_id} in {stack.log_path}",
    )
    assert f"Job State Change  {job_id}/SUBMITTED  SUBMITTING -> SUBMITTED" in stack.log_path.read_text()


def test_image_to_image_job_reads_an_s3_input(stack: RunningStack) -> None:
    bucket = stack.outputs["OutputBucketName"]
    buffer = io.BytesIO()
    Image.new("RGB", (40, 50), (200, 120, 40)).save(buffer, format="PNG")
    stack.client("s3").put_object(Bucket=bucket, Key="e2e-inputs/product.png", Body=buffer.getvalue())
    job_id = new_job_id("i2i")
    stack.send(
        {
            "jobId": job_id,
            "prompt": "same product, ivory background",
            "aspectRatio": "4:5",
            "inputImageUrls": [f"s3://{bucket}/e2e-inputs/product.png"],
        }
    )
    record = stack.wait_terminal(job_id)
    assert record["status"] == "COMPLETED", record
    # The provider was handed a URL for the input, never the s3:// form.
    (task,) = [t for t in stack.sim.tasks() if t.get("taskId", t.get("id")) == record["taskId"]]
    urls = task["inputImageUrls"]
    assert len(urls) == 1 and urls[0].startswith("http") and "e2e-inputs/product.png" in urls[0]


@pytest.mark.parametrize(
    ("message", "field"),
    [({"aspectRatio": "1:1"}, "prompt"), ({"prompt": "x", "aspectRatio": "7:3"}, "aspectRatio")],
)
def test_invalid_message_is_rejected_with_field_errors(
    stack: RunningStack, message: dict[str, Any], field: str
) -> None:
    job_id = new_job_id("invalid")
    spent_before = credits_spent(stack)
    stack.send({"jobId": job_id, **message})
    record = stack.wait_terminal(job_id)
    assert record["status"] == "REJECTED"
    assert record["error"]["source"] == "validation"
    assert field in record["error"]["fieldErrors"]
    assert credits_spent(stack) == spent_before


def test_failed_provider_task_is_recorded_failed_and_refunded(stack: RunningStack) -> None:
    stack.sim.set_faults(task_failure_rate=1.0)
    spent_before = credits_spent(stack)
    job_id = new_job_id("failed")
    stack.send({"jobId": job_id, "prompt": "will fail", "aspectRatio": "1:1"})
    record = stack.wait_terminal(job_id)
    assert record["status"] == "FAILED", record
    assert record["error"]["source"] == "provider"
    assert record["error"]["code"]
    assert record["creditsRefunded"]
    assert record.get("outputs") in (None, [])
    assert credits_spent(stack) == spent_before  # the provider refunded what it pre-debited


def test_duplicate_message_is_charged_once(stack: RunningStack) -> None:
    job_id = new_job_id("dup")
    spent_before = credits_spent(stack)
    stack.send({"jobId": job_id, "prompt": "only once", "aspectRatio": "1:1"})
    stack.send({"jobId": job_id, "prompt": "only once", "aspectRatio": "1:1"})
    record = stack.wait_terminal(job_id)
    assert record["status"] == "COMPLETED"
    queue = stack.outputs["JobsQueueUrl"]
    wait_for(lambda: _in_flight(stack, queue) == 0, timeout=30, what="both copies acknowledged")
    assert record["submitAttempts"] == 1
    assert credits_spent(stack) - spent_before == 3


def test_message_that_keeps_failing_lands_in_the_dlq_uncharged(stack: RunningStack) -> None:
    sqs = stack.client("sqs")
    queue = stack.outputs["JobsQueueUrl"]
    dlq = stack.outputs["JobsDeadLetterQueueUrl"]
    original = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])["Attributes"]
    # The template's 20-minute visibility timeout, shortened so maxReceiveCount (5) is reached in seconds.
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})
    # Receives already waiting (1 s long polls) took the old timeout when they started: let them end.
    time.sleep(2.5)
    stack.sim.set_faults(submit_500_rate=1.0)
    spent_before = credits_spent(stack)
    try:
        job_id = new_job_id("poison")
        stack.send({"jobId": job_id, "prompt": "provider is down", "aspectRatio": "1:1"})

        def dead_lettered() -> list[dict[str, Any]]:
            messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            return [m for m in messages.get("Messages", []) if job_id in m["Body"]]

        (message,) = wait_for(dead_lettered, timeout=60, what="the message in the DLQ")
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    finally:
        stack.sim.set_faults(submit_500_rate=0.0)
        sqs.set_queue_attributes(QueueUrl=queue, Attributes=original)
    # The last attempt may still be releasing its claim when the DLQ already holds the message.
    record = wait_for(
        lambda: (r := stack.record(job_id)) is not None and r["status"] != "SUBMITTING" and r,
        timeout=30,
        what="the last attempt to release its claim",
    )
    assert record["status"] == "RECEIVED"  # released for a retry after every failed submission
    assert record.get("lastSubmitError")
    assert credits_spent(stack) == spent_before


def _in_flight(stack: RunningStack, queue: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_batch_file_uploaded_to_s3_becomes_completed_jobs(stack: RunningStack) -> None:
    if "BatchesPrefix" not in stack.outputs:
        pytest.skip("the template has no S3 batch trigger")
    s3 = stack.client("s3")
    bucket = stack.outputs["OutputBucketName"]
    key = f"{stack.outputs['BatchesPrefix']}{new_job_id('batch')}.jsonl"
    lines = [{"prompt": "a red kite", "aspectRatio": "16:9"}, {"prompt": "a blue kite", "aspectRatio": "1:1"}]
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(line) + "\n" for line in lines).encode())

    def report() -> dict[str, Any] | None:
        try:
            body = s3.get_object(Bucket=bucket, Key=f"{key}.report.json")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        document: dict[str, Any] = json.loads(body)
        return document if document.get("status") == "COMPLETE" else None

    # S3 → UploadsQueue (bucket notification) → S3IntakeFunction → JobsQueue → the pipeline.
    document = wait_for(report, timeout=60, what=f"the report of {key}")
    assert document["enqueued"] == 2
    records = [stack.wait_terminal(f"{document['jobIdPrefix']}{n}") for n in (1, 2)]
    assert [r["status"] for r in records] == ["COMPLETED", "COMPLETED"]
