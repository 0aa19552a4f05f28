"""SQS → Lambda event-source mappings with Lambda's semantics.

moto's own mapping runs the function inside the sender's SendMessage and
deletes failed messages. This poller does what the Lambda service does:
receive in batches (long polling, optional batching window), invoke the
function through the Lambda Invoke API, delete only the messages that
succeeded (`batchItemFailures` honoured), delete nothing when the function
errors (the messages come back after the queue's visibility timeout, and the
queue's redrive policy moves them to the DLQ after maxReceiveCount).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

LOG = logging.getLogger(__name__)

# Short long-poll so stop() is prompt; still a long poll (no busy loop: moto waits on a condition).
RECEIVE_WAIT_SECONDS = 1
DEFAULT_CONCURRENCY = 2


@dataclass(frozen=True)
class SqsMapping:
    """A resolved mapping: physical queue and function."""

    queue_url: str
    queue_arn: str
    function_name: str
    batch_size: int = 10
    max_batching_window_seconds: int = 0
    report_batch_item_failures: bool = False
    concurrency: int = DEFAULT_CONCURRENCY


@dataclass
class PollerStats:
    batches: int = 0
    messages: int = 0
    deleted: int = 0
    item_failures: int = 0
    function_errors: int = 0


def to_lambda_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as the Lambda service hands it to the function."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attributes[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType"),
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(payload: Any, batch_ids: set[str]) -> set[str] | None:
    """Message ids the function reported as failed; None means "treat the whole batch as failed".

    Lambda's rules: null/empty response or empty list → all succeeded; an entry
    with a missing, empty or unknown itemIdentifier → the whole batch failed.
    """
    if payload is None or payload == {} or payload == "":
        return set()
    if not isinstance(payload, dict):
        return set()  # a response without batchItemFailures counts as full success
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed = set()
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not identifier or identifier not in batch_ids:
            return None
        failed.add(identifier)
    return failed


class SqsPoller:
    """`concurrency` worker threads, each receiving a batch and invoking the function."""

    def __init__(self, mapping: SqsMapping, sqs: SQSClient, lambda_client: LambdaClient, region: str) -> None:
        self.mapping = mapping
        self._sqs = sqs
        self._lambda = lambda_client
        self._region = region
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = PollerStats()
        self._stats_lock = threading.Lock()

    def start(self) -> None:
        for index in range(max(1, self.mapping.concurrency)):
            thread = threading.Thread(
                target=self._run,
                name=f"imagejobs-sqs-poller-{self.mapping.function_name}-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        self._threads.clear()
        if alive:
            LOG.warning("SQS poller threads still running after %.0fs: %s", timeout, alive)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._receive_batch()
                if batch:
                    self._process(batch)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if isinstance(exc, ClientError):  # the service's answer (throttled, 5xx): no trace needed
                    LOG.warning("SQS poller for %s: %s; retrying", self.mapping.function_name, exc)
                else:
                    LOG.exception("SQS poller for %s failed; retrying", self.mapping.function_name)
                self._stop.wait(1.0)

    def _receive_batch(self) -> list[MessageTypeDef]:
        mapping = self.mapping
        window_end = time.monotonic() + mapping.max_batching_window_seconds
        batch: list[MessageTypeDef] = []
        while not self._stop.is_set() and len(batch) < mapping.batch_size:
            response = self._sqs.receive_message(
                QueueUrl=mapping.queue_url,
                MaxNumberOfMessages=min(10, mapping.batch_size - len(batch)),
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch.extend(response.get("Messages", []))
            if batch and time.monotonic() >= window_end:
                break
        return batch

    def _process(self, batch: list[MessageTypeDef]) -> None:
        mapping = self.mapping
        event = {"Records": [to_lambda_record(m, mapping.queue_arn, self._region) for m in batch]}
        response = self._lambda.invoke(FunctionName=mapping.function_name, Payload=json.dumps(event).encode())
        raw = response["Payload"].read()
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.messages += len(batch)
        if response.get("FunctionError"):
            # Nothing is deleted: every message becomes visible again after the visibility timeout.
            with self._stats_lock:
                self.stats.function_errors += 1
            LOG.warning("%s errored on a batch of %d: %s", mapping.function_name, len(batch), raw[:500])
            return
        failed: set[str] | None = set()
        if mapping.report_batch_item_failures:
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            failed = failed_message_ids(payload, {m["MessageId"] for m in batch})
        if failed is None:
            LOG.warning(
                "%s returned an invalid batchItemFailures response: %s", mapping.function_name, raw[:500]
            )
            with self._stats_lock:
                self.stats.item_failures += len(batch)
            return
        done = [m for m in batch if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        with self._stats_lock:
            self.stats.deleted += len(done)
            self.stats.item_failures += len(failed)
