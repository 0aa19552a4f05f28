"""In-process moto (S3, SQS, DynamoDB) for the upload triggers; helpers to build S3 → SQS events."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from imagejobs.config import S3IntakeSettings
from imagejobs.store import JobStore
from moto import mock_aws
from PIL import Image

from tests.conftest import SAMPLE_ENV
from tests.unit.domain.fakes import Clock, create_jobs_table

BUCKET = SAMPLE_ENV["OUTPUT_BUCKET"]
REGION = "us-east-1"


def png_bytes(size: tuple[int, int] = (8, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def s3_event(key: str, *, etag: str | None = None, bucket: str = BUCKET, encode: str = "aws") -> str:
    """An S3 → SQS notification body. AWS URL-encodes keys (space → +); moto also encodes / as %2F."""
    encoded = quote_plus(key, safe="/") if encode == "aws" else quote_plus(key, safe="")
    obj: dict[str, Any] = {"key": encoded, "size": 1, "sequencer": "00AB"}
    if etag:
        obj["eTag"] = etag
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj},
                }
            ]
        }
    )


class RecordingSqs:
    """The jobs queue as SendMessage/SendMessageBatch see it: SQS's request limits enforced, bodies kept.

    (moto's queue is quadratic in its length, which made a 1,000-message test take 30 s.)
    """

    MAX_BATCH_ENTRIES = 10
    MAX_BATCH_BYTES = 256 * 1024

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self.sent: list[str] = []
        self.batches: list[int] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        assert QueueUrl == self.queue_url
        assert len(MessageBody.encode()) <= self.MAX_BATCH_BYTES
        self.sent.append(MessageBody)
        return {"MessageId": str(len(self.sent))}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        assert QueueUrl == self.queue_url
        assert 1 <= len(Entries) <= self.MAX_BATCH_ENTRIES, (
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
        )
        assert len({e["Id"] for e in Entries}) == len(Entries), "BatchEntryIdsNotDistinct"
        total = sum(len(e["MessageBody"].encode()) for e in Entries)
        assert total <= self.MAX_BATCH_BYTES, f"BatchRequestTooLong ({total} bytes)"
        self.batches.append(len(Entries))
        self.sent.extend(e["MessageBody"] for e in Entries)
        return {"Successful": [{"Id": e["Id"], "MessageId": e["Id"]} for e in Entries], "Failed": []}


@dataclass
class Aws:
    s3: Any
    sqs: RecordingSqs
    store: JobStore
    queue_url: str
    settings: S3IntakeSettings
    clock: Clock

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        return str(self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, **kwargs)["ETag"]).strip('"')

    def messages(self) -> list[dict[str, Any]]:
        """The job messages sent to the jobs queue since the last call."""
        sent, self.sqs.sent = self.sqs.sent, []
        return [json.loads(body) for body in sent]

    def report(self, batch_key: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=BUCKET, Key=batch_key + ".report.json")["Body"].read()
        return dict(json.loads(body))


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        queue_url = f"https://sqs.{REGION}.amazonaws.com/123456789012/jobs"
        table = create_jobs_table(boto3.resource("dynamodb", region_name=REGION), SAMPLE_ENV["JOBS_TABLE"])
        settings = S3IntakeSettings.from_env({**SAMPLE_ENV, "JOBS_QUEUE_URL": queue_url})
        yield Aws(s3, RecordingSqs(queue_url), JobStore(table), queue_url, settings, Clock())
