"""Stack resources and job records shaped as docs/architecture.md describes (shared by the CLI tests)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imagejobs_tools.local.template import jobs_table_definition

QUEUE_NAME = "imagejobs-jobs"
TABLE_NAME = "imagejobs-jobs"
BUCKET_NAME = "imagejobs-outputs"
BASE_TIME = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class StackResources:
    queue_url: str
    table_name: str
    bucket_name: str

    def outputs(self) -> dict[str, str]:
        return {
            "JobsQueueUrl": self.queue_url,
            "JobsTableName": self.table_name,
            "OutputBucketName": self.bucket_name,
        }

    def target_args(self, region: str = "us-east-1") -> list[str]:
        return [
            "--queue-url", self.queue_url, "--table", self.table_name,
            "--bucket", self.bucket_name, "--region", region,
        ]  # fmt: skip


def create_stack_resources(
    sqs: Any, dynamodb: Any, s3: Any, projection: str = "ALL", suffix: str = ""
) -> StackResources:
    """The queue, the jobs table with its ByStatus GSI, and the output bucket (`dynamodb`: a client)."""
    queue_name, table_name, bucket_name = QUEUE_NAME + suffix, TABLE_NAME + suffix, BUCKET_NAME + suffix
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    definition = jobs_table_definition()
    # Some tests run `list` against an index that projects less than ALL.
    (index,) = [i for i in definition["GlobalSecondaryIndexes"] if i["IndexName"] == "ByStatus"]
    index["Projection"] = {"ProjectionType": projection}
    dynamodb.create_table(TableName=table_name, **definition)
    s3.create_bucket(Bucket=bucket_name)
    return StackResources(queue_url, table_name, bucket_name)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_record(
    job_id: str,
    status: str,
    *,
    minute: int = 0,
    prompt: str = "a lighthouse at dusk",
    model: str = "gpt-image-2",
    credits_used: int | None = 3,
    outputs: list[dict[str, Any]] | None = None,
    error: dict[str, Any] | None = None,
    polls: int | None = None,
) -> dict[str, Any]:
    """A job record with a status history leading to `status`, updated `minute` minutes after BASE_TIME."""
    created = BASE_TIME + timedelta(minutes=minute)
    path = {
        "RECEIVED": ["RECEIVED"],
        "SUBMITTING": ["RECEIVED", "SUBMITTING"],
        "SUBMITTED": ["RECEIVED", "SUBMITTING", "SUBMITTED"],
        "COMPLETED": ["RECEIVED", "SUBMITTING", "SUBMITTED", "COMPLETED"],
        "FAILED": ["RECEIVED", "SUBMITTING", "SUBMITTED", "FAILED"],
        "TIMED_OUT": ["RECEIVED", "SUBMITTING", "SUBMITTED", "TIMED_OUT"],
        "REJECTED": ["REJECTED"],
        "SUBMIT_UNKNOWN": ["RECEIVED", "SUBMITTING", "SUBMIT_UNKNOWN"],
    }[status]
    history = [{"status": step, "at": iso(created + timedelta(seconds=5 * i))} for i, step in enumerate(path)]
    record: dict[str, Any] = {
        "jobId": job_id,
        "status": status,
        "statusHistory": history,
        "createdAt": history[0]["at"],
        "updatedAt": history[-1]["at"],
        "request": {"jobId": job_id, "prompt": prompt, "model": model},
        "model": model,
        "kind": "image",
        "prompt": prompt,
    }
    if status not in {"RECEIVED", "REJECTED"} and credits_used is not None:
        record["creditsUsed"] = credits_used
    if polls is not None:
        record["polls"] = polls
    if outputs is not None:
        record["outputs"] = outputs
    if error is not None:
        record["error"] = error
    return record


def put_output(
    s3: Any, bucket: str, key: str, body: bytes, content_type: str = "image/png"
) -> dict[str, Any]:
    """Store an output object and return its `outputs[]` entry (with the right sha256)."""
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    return {
        "uri": f"s3://{bucket}/{key}",
        "bucket": bucket,
        "key": key,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "contentType": content_type,
    }
