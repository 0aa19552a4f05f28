"""Batches (docs/batches.md): one item per batch in the jobs table, every line's job counted once.

A batch's jobs carry ``batchId`` and ``batchLine``. The batch item (``jobId = batch#<batchId>``)
holds ``expected`` (the batch's job lines, set when its intake has read them all) and ``done``
(its jobs in a terminal status, with a ``count<STATUS>`` per status). JobEventsFunction counts a
job from the change stream when the job's record enters a terminal status: the count and a
``batchCounted`` mark on the job are one transaction, so a stream record delivered twice is
counted once. The batch item's own change where ``done`` reaches ``expected`` (whichever of the
last job and the end of the intake comes last) queues the batch for its results, which
BatchResultsFunction writes under a lease (``batchStatus`` OPEN → WRITING → COMPLETED); the
change into COMPLETED is published as "Batch Completed".
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from imagejobs.events import EventPublisher, JobEvent
from imagejobs.store import TERMINAL, BatchLine, from_dynamo, iso, to_dynamo
from imagejobs.webhooks import DeliveryQueue, batch_delivery_for

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_sqs import SQSClient

BATCH_KEY_PREFIX = "batch#"
OPEN, WRITING, COMPLETED = "OPEN", "WRITING", "COMPLETED"
COUNTED = "batchCounted"
COUNT_PREFIX = "count"
BATCH_COMPLETED = "Batch Completed"
BY_BATCH_INDEX = "ByBatch"
# Each terminal job of a batch updates the one batch item in a transaction; DynamoDB refuses a
# transaction that overlaps another on the same item (TransactionConflict), so it is retried.
CONFLICT_ATTEMPTS = 6


def batch_key(batch_id: str) -> str:
    return BATCH_KEY_PREFIX + batch_id


def is_batch_item(item: Mapping[str, Any]) -> bool:
    return str(item.get("jobId") or "").startswith(BATCH_KEY_PREFIX)


def status_count_attribute(status: str) -> str:
    return COUNT_PREFIX + status


@dataclass(frozen=True)
class BatchFiles:
    """Where a batch's results go: ``<stem>.results.jsonl`` and ``<stem>.summary.json``."""

    bucket: str
    stem: str

    @classmethod
    def beside(cls, bucket: str, batch_key_name: str) -> BatchFiles:
        """Beside an uploaded batch ``…/name.jsonl``: ``…/name.results.jsonl``, ``…/name.summary.json``."""
        stem = (
            batch_key_name[: -len(".jsonl")] if batch_key_name.lower().endswith(".jsonl") else batch_key_name
        )
        return cls(bucket, stem)

    @classmethod
    def of(cls, batch: Mapping[str, Any]) -> BatchFiles:
        """The files a batch item names."""
        return cls(str(batch["bucket"]), str(batch["resultsKey"]).removesuffix(RESULTS_SUFFIX))

    @property
    def results_key(self) -> str:
        return self.stem + RESULTS_SUFFIX

    @property
    def summary_key(self) -> str:
        return self.stem + SUMMARY_SUFFIX


RESULTS_SUFFIX = ".results.jsonl"
SUMMARY_SUFFIX = ".summary.json"


# ----------------------------------------------------------------------------- rules


def counted_change(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> tuple[BatchLine, str] | None:
    """The batch line and terminal status a job's change makes count, or None (plain JSON images)."""
    if not new or is_batch_item(new) or new.get(COUNTED):
        return None
    line = BatchLine.of(new)
    status = str(new.get("status") or "")
    if line is None or status not in TERMINAL or str((old or {}).get("status") or "") in TERMINAL:
        return None
    return line, status


def _complete(item: Mapping[str, Any] | None) -> bool:
    if not item or item.get("expected") is None:
        return False
    return int(item.get("done") or 0) >= int(item["expected"])


def became_complete(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str | None:
    """The batch id whose every job is now terminal, from its batch item's change, or None."""
    if not new or not is_batch_item(new) or new.get("batchStatus") != OPEN:
        return None
    return str(new["batchId"]) if _complete(new) and not _complete(old) else None


def batch_completed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> JobEvent | None:
    """The "Batch Completed" event for a batch item's change into COMPLETED, or None."""
    if not new or not is_batch_item(new) or new.get("batchStatus") != COMPLETED:
        return None
    if (old or {}).get("batchStatus") == COMPLETED:
        return None
    batch_id = str(new["batchId"])
    detail = {
        "eventId": f"batch/{batch_id}/{COMPLETED}",
        "batchId": batch_id,
        "status": COMPLETED,
        "source": new.get("source"),
        "results": {"bucket": new.get("bucket"), "key": new.get("resultsKey")},
        "summary": new.get("summary"),
        "completedAt": new.get("completedAt"),
    }
    return JobEvent(BATCH_COMPLETED, detail)


# ----------------------------------------------------------------------------- the batch item


class BatchNotOpen(RuntimeError):
    """The batch is being written by another worker, or already written."""


class BatchStore:
    """The batch items of the jobs table (conditional writes, as the job store's)."""

    def __init__(self, table: Table, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.table = table
        self._sleep = sleep

    def get(self, batch_id: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"jobId": batch_key(batch_id)}, ConsistentRead=True).get("Item")
        return from_dynamo(item) if item else None

    def open(
        self,
        batch_id: str,
        files: BatchFiles,
        source: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        now: float | None = None,
    ) -> None:
        """Create the batch item, or leave it as it is (a resumed or redelivered intake); a
        ``webhook_url`` is where its "Batch Completed" is delivered."""
        at = iso(time.time() if now is None else now)
        values: dict[str, Any] = {
            ":id": batch_id,
            ":now": at,
            ":open": OPEN,
            ":bucket": files.bucket,
            ":results": files.results_key,
            ":summary": files.summary_key,
            ":source": to_dynamo(dict(source)),
            ":zero": 0,
        }
        webhook = ""
        if webhook_url is not None:
            webhook, values[":hook"] = ", webhookUrl = :hook", webhook_url
        self.table.update_item(
            Key={"jobId": batch_key(batch_id)},
            UpdateExpression=(
                "SET batchId = :id, createdAt = if_not_exists(createdAt, :now), updatedAt = :now, "
                "batchStatus = if_not_exists(batchStatus, :open), #bucket = :bucket, resultsKey = :results, "
                f"summaryKey = :summary, #source = :source{webhook} ADD done :zero"
            ),
            ExpressionAttributeNames={"#bucket": "bucket", "#source": "source"},
            ExpressionAttributeValues=values,
        )

    def set_expected(self, batch_id: str, expected: int, *, now: float | None = None) -> None:
        """The batch's job lines, once its intake has read them all."""
        self.table.update_item(
            Key={"jobId": batch_key(batch_id)},
            UpdateExpression="SET expected = :n, updatedAt = :now",
            ConditionExpression="attribute_exists(jobId)",
            ExpressionAttributeValues={":n": expected, ":now": iso(time.time() if now is None else now)},
        )

    def count_terminal(self, job_id: str, line: BatchLine, status: str, *, now: float | None = None) -> bool:
        """Count a job that entered ``status`` in its batch; False when it was counted before."""
        at = iso(time.time() if now is None else now)
        client = self.table.meta.client
        items = [
            {
                "Update": {
                    "TableName": self.table.name,
                    "Key": {"jobId": job_id},
                    "UpdateExpression": "SET #counted = :true",
                    "ConditionExpression": "attribute_exists(jobId) AND attribute_not_exists(#counted)",
                    "ExpressionAttributeNames": {"#counted": COUNTED},
                    "ExpressionAttributeValues": {":true": True},
                }
            },
            {
                "Update": {
                    "TableName": self.table.name,
                    "Key": {"jobId": batch_key(line.batch_id)},
                    "UpdateExpression": "SET batchId = :id, updatedAt = :now ADD done :one, #status :one",
                    "ExpressionAttributeNames": {"#status": status_count_attribute(status)},
                    "ExpressionAttributeValues": {":id": line.batch_id, ":now": at, ":one": 1},
                }
            },
        ]
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                # Plain values: the resource's client serialises them as the table does (its
                # stubs describe the low-level client's AttributeValues).
                client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
                return True
            except ClientError as error:
                codes = _cancellation_codes(error)
                if codes is None:
                    raise
                if codes[:1] == ["ConditionalCheckFailed"]:
                    return False  # counted by an earlier delivery of this change (or a lost response's send)
                if "TransactionConflict" not in codes or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                self._sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def claim_for_results(
        self, batch_id: str, lease_seconds: float, *, now: float | None = None
    ) -> dict[str, Any]:
        """OPEN (or WRITING past its lease) → WRITING; the batch item, or ``BatchNotOpen``."""
        at = time.time() if now is None else now
        try:
            response = self.table.update_item(
                Key={"jobId": batch_key(batch_id)},
                UpdateExpression="SET batchStatus = :writing, leaseExpiresAt = :until, updatedAt = :now",
                ConditionExpression=(
                    "attribute_exists(expected) AND done >= expected AND "
                    "(batchStatus = :open OR (batchStatus = :writing AND leaseExpiresAt < :at))"
                ),
                ExpressionAttributeValues={
                    ":writing": WRITING,
                    ":open": OPEN,
                    ":until": to_dynamo(at + lease_seconds),
                    ":at": to_dynamo(at),
                    ":now": iso(at),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            current = self.get(batch_id) or {}
            raise BatchNotOpen(f"batch {batch_id} is {current.get('batchStatus') or 'unknown'}") from None
        return from_dynamo(response["Attributes"])

    def release(self, batch_id: str, *, now: float | None = None) -> None:
        """WRITING → OPEN: the results could not be written yet (the index lags the records)."""
        self._end_writing(batch_id, "batchStatus = :to REMOVE leaseExpiresAt", {":to": OPEN}, now)

    def complete(self, batch_id: str, summary: Mapping[str, Any], *, now: float | None = None) -> None:
        """WRITING → COMPLETED, with the summary the results step computed."""
        values = {":to": COMPLETED, ":summary": to_dynamo(dict(summary))}
        self._end_writing(
            batch_id,
            "batchStatus = :to, completedAt = :now, summary = :summary REMOVE leaseExpiresAt",
            values,
            now,
        )

    def _end_writing(self, batch_id: str, sets: str, values: Mapping[str, Any], now: float | None) -> None:
        self.table.update_item(
            Key={"jobId": batch_key(batch_id)},
            UpdateExpression=f"SET updatedAt = :now, {sets}",
            ConditionExpression="batchStatus = :writing",
            ExpressionAttributeValues={
                ":writing": WRITING,
                ":now": iso(time.time() if now is None else now),
                **values,
            },
        )


def _cancellation_codes(error: ClientError) -> list[str] | None:
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    return [str(reason.get("Code") or "None") for reason in error.response.get("CancellationReasons") or []]


# ----------------------------------------------------------------------------- the change stream


class ResultsQueue(Protocol):
    def enqueue(self, batch_id: str) -> None:
        """Ask for the batch's results to be written."""


class SqsResultsQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def enqueue(self, batch_id: str) -> None:
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps({"batchId": batch_id}))


def follow_change(
    old_image: Mapping[str, Any] | None,
    new_image: Mapping[str, Any] | None,
    *,
    batches: BatchStore,
    results: ResultsQueue,
    publisher: EventPublisher,
    webhooks: DeliveryQueue,
) -> str | None:
    """What one change of the jobs table means for batches; None: nothing."""
    old, new = from_dynamo(old_image or {}), from_dynamo(new_image or {})
    counted = counted_change(old, new)
    if counted is not None:
        line, status = counted
        first = batches.count_terminal(str(new["jobId"]), line, status)
        return f"counted in {line.batch_id} ({status})" if first else f"already counted in {line.batch_id}"
    complete = became_complete(old, new)
    if complete is not None:
        results.enqueue(complete)
        return f"batch {complete} complete: results queued"
    event = batch_completed(old, new)
    if event is None:
        return None
    publisher.publish([event])
    delivery = batch_delivery_for(event, new)
    if delivery is None:
        return event.event_id
    webhooks.enqueue(delivery)
    return f"{event.event_id} (+ webhook)"
