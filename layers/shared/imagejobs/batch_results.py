"""A batch's results (docs/batches.md): ``<stem>.results.jsonl`` and ``<stem>.summary.json``.

Written once every job of the batch is terminal, by whoever holds the batch item's lease. The
records are read from the ``ByBatch`` index (``batchId``, ``batchLine``) a page (DynamoDB's 1 MB)
at a time and the results file is written as they come (a multipart upload past one part), so a batch of
100,000 lines never sits in memory: the summary keeps counters and one float per job for the
latency percentiles. The index is eventually consistent: a record it shows as not terminal is
read again from the table, and a batch whose index still lacks lines is released and retried.
Each file is written at most once: one already there for this batch is kept (a retry after a
crash between the upload and the batch item's COMPLETED).
"""

from __future__ import annotations

import io
import json
import math
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from imagejobs.batches import BY_BATCH_INDEX, BatchFiles, BatchStore
from imagejobs.store import TERMINAL, JobStatus, from_dynamo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PART_BYTES = 8 * 1024 * 1024  # S3 multipart parts are at least 5 MiB (but the last)
BATCH_METADATA = "imagejobs-batch"
# What the ByBatch index projects (template.yaml): what result_line and the summary read.
RESULT_ATTRIBUTES = (
    "status",
    "prompt",
    "model",
    "kind",
    "outputs",
    "creditsUsed",
    "creditsRefunded",
    "createdAt",
    "submittedAt",
    "completedAt",
    "updatedAt",
    "latency",
    "error",
)


class BatchNotSettled(RuntimeError):
    """The index does not show every job of the batch terminal yet: retry later."""


# ----------------------------------------------------------------------------- one line


def credits_refunded(record: Mapping[str, Any]) -> int:
    """``creditsRefunded`` as a number (the record's ``true`` means all of ``creditsUsed``)."""
    refunded = record.get("creditsRefunded")
    if refunded is True:
        return int(record.get("creditsUsed") or 0)
    return int(refunded or 0)


def result_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the results file says of one line's job."""
    latency = record.get("latency") or {}
    line: dict[str, Any] = {
        "line": record["batchLine"],
        "jobId": record["jobId"],
        "status": record.get("status"),
        "outputs": [o.get("key") for o in record.get("outputs") or []],
        "creditsUsed": record.get("creditsUsed"),
        "creditsRefunded": credits_refunded(record) if record.get("creditsRefunded") is not None else None,
        "timings": {
            name: value
            for name, value in (
                ("createdAt", record.get("createdAt")),
                ("submittedAt", record.get("submittedAt")),
                ("completedAt", record.get("completedAt")),
                ("totalSeconds", latency.get("totalSeconds")),
            )
            if value is not None
        },
    }
    error = record.get("error")
    if error:
        line["error"] = {k: error[k] for k in ("source", "code", "message", "fieldErrors") if k in error}
    return line


def encoded_result_line(record: Mapping[str, Any]) -> bytes:
    """One line of the results file, as written (UTF-8 JSON, keys sorted, newline)."""
    return json.dumps(result_line(record), ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"


# ----------------------------------------------------------------------------- the summary


def percentile(sorted_values: array[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


class SummaryBuilder:
    """Counts and credits of a batch's jobs, fed one record at a time."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.credits_used = 0
        self.credits_refunded = 0
        self.first_submit: str | None = None
        self.last_completion: str | None = None
        self._latencies: array[float] = array("d")

    def add(self, record: Mapping[str, Any]) -> None:
        status = str(record.get("status"))
        self.by_status[status] += 1
        self.credits_used += int(record.get("creditsUsed") or 0)
        self.credits_refunded += credits_refunded(record)
        submitted = record.get("submittedAt")
        if submitted and (self.first_submit is None or submitted < self.first_submit):
            self.first_submit = str(submitted)
        completed = record.get("completedAt")
        if completed and (self.last_completion is None or completed > self.last_completion):
            self.last_completion = str(completed)
        total = (record.get("latency") or {}).get("totalSeconds")
        if status == JobStatus.COMPLETED and total is not None:
            self._latencies.append(float(total))

    @property
    def jobs(self) -> int:
        return sum(self.by_status.values())

    def build(self, batch: Mapping[str, Any], files: BatchFiles) -> dict[str, Any]:
        latencies = array("d", sorted(self._latencies))
        return {
            "batchId": batch["batchId"],
            "source": batch.get("source"),
            "jobs": self.jobs,
            "byStatus": dict(sorted(self.by_status.items())),
            "creditsUsed": self.credits_used,
            "creditsRefunded": self.credits_refunded,
            "creditsSpent": self.credits_used - self.credits_refunded,
            # Charged or not is unknown for these (docs/records.md): compare with the provider.
            "submitUnknown": self.by_status.get(JobStatus.SUBMIT_UNKNOWN, 0),
            "firstSubmitAt": self.first_submit,
            "lastCompletionAt": self.last_completion,
            "latencySeconds": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95)},
            "results": {"bucket": files.bucket, "key": files.results_key},
            "createdAt": batch.get("createdAt"),
        }


# ----------------------------------------------------------------------------- reading and writing


class BatchRecords:
    """A batch's job records in line order, from the ``ByBatch`` index."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def in_line_order(self, batch_id: str, *, settled: bool = True) -> Iterator[dict[str, Any]]:
        """Every record, a page at a time; ``settled``: each one terminal (read again from the table
        when the index lags), else ``BatchNotSettled``. ``settled=False``: as the index shows them
        (``imagejobs batch`` follows a batch still running)."""
        kwargs: dict[str, Any] = {
            "IndexName": BY_BATCH_INDEX,
            "KeyConditionExpression": "batchId = :id",
            "ExpressionAttributeValues": {":id": batch_id},
        }
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                record = from_dynamo(item)
                if settled and record.get("status") not in TERMINAL:
                    record = self._fresh(record)
                yield record
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _fresh(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        item = self.table.get_item(Key={"jobId": stale["jobId"]}, ConsistentRead=True).get("Item")
        record = from_dynamo(item) if item else dict(stale)
        if record.get("status") not in TERMINAL:
            raise BatchNotSettled(
                f"job {stale['jobId']} (line {stale.get('batchLine')}) is {record.get('status')}"
            )
        return record


class StreamedObject:
    """Bytes written to one S3 object as they come: one PutObject, or a multipart upload past a part."""

    def __init__(
        self, s3: S3Client, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        self._s3 = s3
        self._bucket, self._key = bucket, key
        self._content_type, self._metadata = content_type, dict(metadata)
        self._buffer = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    def write(self, data: bytes) -> None:
        self._buffer.write(data)
        if self._buffer.tell() >= PART_BYTES:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            created = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type, Metadata=self._metadata
            )
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        part = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._buffer.getvalue(),
        )
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})
        self._buffer = io.BytesIO()

    def close(self) -> None:
        if self._upload_id is None:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key,
                ContentType=self._content_type,
                Metadata=self._metadata,
                Body=self._buffer.getvalue(),
            )
            return
        if self._buffer.tell():
            self._flush_part()
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)


def _written_for(s3: S3Client, bucket: str, key: str, batch_id: str) -> bool:
    """Whether the object is already there, written for this batch."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return bool(head.get("Metadata", {}).get(BATCH_METADATA) == batch_id)


def _stream_results(
    records: Iterator[dict[str, Any]], summary: SummaryBuilder, sink: StreamedObject | None
) -> None:
    for record in records:
        summary.add(record)
        if sink is not None:
            sink.write(encoded_result_line(record))


def write_results(
    batch_id: str,
    *,
    batches: BatchStore,
    records: BatchRecords,
    s3: S3Client,
    lease_seconds: float,
    now: float | None = None,
) -> dict[str, Any]:
    """Claim the batch, write its results and summary, mark it COMPLETED; the summary."""
    batch = batches.claim_for_results(batch_id, lease_seconds, now=now)
    files = BatchFiles.of(batch)
    summary = SummaryBuilder()
    metadata = {BATCH_METADATA: batch_id}
    sink = None
    if not _written_for(s3, files.bucket, files.results_key, batch_id):
        sink = StreamedObject(s3, files.bucket, files.results_key, "application/x-ndjson", metadata)
    try:
        _stream_results(records.in_line_order(batch_id), summary, sink)
        if summary.jobs < int(batch["expected"]):
            raise BatchNotSettled(f"the index shows {summary.jobs} of the batch's {batch['expected']} jobs")
    except BaseException:
        if sink is not None:
            sink.abort()
        batches.release(batch_id)
        raise
    if sink is not None:
        sink.close()
    document = summary.build(batch, files)
    if not _written_for(s3, files.bucket, files.summary_key, batch_id):
        body = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
        s3.put_object(
            Bucket=files.bucket,
            Key=files.summary_key,
            Body=body,
            ContentType="application/json",
            Metadata=metadata,
        )
    batches.complete(batch_id, document, now=time.time() if now is None else now)
    return document
