"""Every function through `sam local invoke` on each of its events/ files, against a running local stack.

The env-vars file is `imagejobs local sam-env`'s; an event's placeholders are replaced with the stack's
names (bucket, the simulator's output URL, the provider's task id); each test asserts what the
invocation did to the stack.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests

from imagejobs_tools.local.demo import demo_png
from tests.e2e.conftest import API_KEY, RunningStack, wait_for

from .conftest import SamLocal, event

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("samlocal")]

BUCKET_PLACEHOLDER = "REPLACE-with-OutputBucketName-output"
SAMPLE_JOB = "demo-cat-0001"  # the job of sqs_job.json, poll.json, store_outputs.json
SAMPLE_TASK = "tsk_01J9EXAMPLE0000000000000000"


@pytest.fixture(scope="module")
def invoke(sam_local: SamLocal, sam_env: Path) -> Any:
    def run(function: str, body: dict[str, Any]) -> dict[str, Any]:
        return sam_local.invoke(function, body, sam_env, sam_env.parent)

    return run


def submitted(stack: RunningStack, job_id: str) -> dict[str, Any]:
    """Send a job through the stack's queue (its own IntakeFunction) and wait until it is SUBMITTED."""
    stack.send({"jobId": job_id, "prompt": "a lighthouse at dawn", "aspectRatio": "1:1"})
    return wait_for(
        lambda: (r := stack.record(job_id)) is not None and r["status"] == "SUBMITTED" and r,
        60,
        what=f"{job_id} SUBMITTED",
    )


def test_intake_records_submits_and_starts_the_execution(worker_stack: RunningStack, invoke: Any) -> None:
    response = invoke("IntakeFunction", event("sqs_job.json"))

    assert response == {"batchItemFailures": []}
    record = worker_stack.record(SAMPLE_JOB)
    assert record is not None and record["status"] == "SUBMITTED"
    assert provider_task(worker_stack, record["taskId"]).ok
    sfn = worker_stack.client("stepfunctions")
    arn = worker_stack.outputs["StateMachineArn"].replace(":stateMachine:", ":execution:") + f":{SAMPLE_JOB}"
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"


def test_intake_rejects_the_invalid_jobs_and_acknowledges_them(
    worker_stack: RunningStack, invoke: Any
) -> None:
    body = event("sqs_invalid_job.json")
    response = invoke("IntakeFunction", body)

    # Rejected, not failed: a bad message is recorded REJECTED and deleted, never retried.
    assert response == {"batchItemFailures": []}
    for record in body["Records"]:
        job = worker_stack.record(record["messageId"])
        assert job is not None and job["status"] == "REJECTED", record["messageId"]


def test_poll_reports_the_providers_completed_task(worker_stack: RunningStack, invoke: Any) -> None:
    task_id = submitted(worker_stack, "samlocal-poll")["taskId"]
    response = invoke(
        "PollFunction", event("poll.json", **{SAMPLE_JOB: "samlocal-poll", SAMPLE_TASK: task_id})
    )

    assert response["poll"]["status"] == "COMPLETED"
    assert response["poll"]["outputUrls"] and response["polls"] == 1


def test_store_outputs_copies_the_image_and_completes_the_job(
    worker_stack: RunningStack, invoke: Any
) -> None:
    task_id = submitted(worker_stack, "samlocal-store")["taskId"]
    # The simulator's output URLs for the task, in place of the sample's CDN URL.
    files = re.escape(f"{worker_stack.sim.base_url}/files/{task_id}/")
    output_urls = sorted(set(re.findall(rf"{files}[^\"]+", provider_task(worker_stack, task_id).text)))
    body = event("store_outputs.json", **{SAMPLE_JOB: "samlocal-store", SAMPLE_TASK: task_id})
    body["poll"]["outputUrls"] = output_urls
    invoke("StoreOutputsFunction", body)

    done = worker_stack.record("samlocal-store")
    assert done is not None and done["status"] == "COMPLETED"
    s3 = worker_stack.client("s3")
    [key] = [output["key"] for output in done["outputs"]]
    assert s3.head_object(Bucket=worker_stack.outputs["OutputBucketName"], Key=key)["ContentLength"] > 0


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("finalize_failed.json", "FAILED"),
        ("finalize_timed_out.json", "TIMED_OUT"),
        ("finalize_error.json", "FAILED"),
    ],
)
def test_finalize_records_the_terminal_status(
    worker_stack: RunningStack, invoke: Any, name: str, status: str
) -> None:
    job_id = "samlocal-" + name.removesuffix(".json").replace("_", "-")
    task_id = submitted(worker_stack, job_id)["taskId"]
    invoke("FinalizeFunction", event(name, **{SAMPLE_JOB: job_id, SAMPLE_TASK: task_id}))

    record = worker_stack.record(job_id)
    assert record is not None and record["status"] == status


def test_s3_intake_turns_an_image_upload_into_a_job(worker_stack: RunningStack, invoke: Any) -> None:
    bucket = worker_stack.outputs["OutputBucketName"]
    body = event("s3_image_upload.json", **{BUCKET_PLACEHOLDER: bucket})
    [s3_event] = json.loads(body["Records"][0]["body"])["Records"]
    key = unquote_plus(s3_event["s3"]["object"]["key"])
    worker_stack.client("s3").put_object(
        Bucket=bucket, Key=key, Body=demo_png(), Metadata={"prompt": "the bottle on a marble table"}
    )
    response = invoke("S3IntakeFunction", body)

    assert response == {"batchItemFailures": []}
    jobs = wait_for(lambda: upload_jobs(worker_stack), 60, what="the upload's job record")
    assert [job["request"]["inputImageUrls"] for job in jobs] == [[f"s3://{bucket}/{key}"]]


def test_s3_intake_turns_a_jsonl_batch_into_jobs_and_a_report(
    worker_stack: RunningStack, invoke: Any
) -> None:
    bucket = worker_stack.outputs["OutputBucketName"]
    body = event("s3_batch_upload.json", **{BUCKET_PLACEHOLDER: bucket})
    [s3_event] = json.loads(body["Records"][0]["body"])["Records"]
    key = unquote_plus(s3_event["s3"]["object"]["key"])
    lines = [{"jobId": f"samlocal-batch-{n}", "prompt": f"a lighthouse, study {n}"} for n in range(3)]
    s3 = worker_stack.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(line) + "\n" for line in lines).encode())
    response = invoke("S3IntakeFunction", body)

    assert response == {"batchItemFailures": []}
    report = json.load(s3.get_object(Bucket=bucket, Key=f"{key}.report.json")["Body"])
    assert report["status"] == "COMPLETE" and report["lines"] == 3
    for line in lines:
        wait_for(lambda job=line["jobId"]: worker_stack.record(job), 60, what=line["jobId"])


def test_s3_intake_acknowledges_the_s3_test_event(worker_stack: RunningStack, invoke: Any) -> None:
    bucket = worker_stack.outputs["OutputBucketName"]
    response = invoke("S3IntakeFunction", event("s3_test_event.json", **{BUCKET_PLACEHOLDER: bucket}))

    assert response == {"batchItemFailures": []}


def provider_task(stack: RunningStack, task_id: str) -> requests.Response:
    """The provider's GET of a task (the simulator's admin API answers loopback clients only)."""
    url = f"{stack.sim.base_url}/api/ai/tasks/{task_id}"
    return requests.get(url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def upload_jobs(stack: RunningStack) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.outputs["JobsTableName"])["Items"]
    ids = [item["jobId"]["S"] for item in items if item["jobId"]["S"].startswith("up-")]
    return [record for job_id in ids if (record := stack.record(job_id)) is not None]
