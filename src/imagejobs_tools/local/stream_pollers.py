"""DynamoDB Streams → Lambda event-source mappings with Lambda's semantics.

moto's own mapping runs the function inside the write that made the stream record (the writer
waits for it) and then empties the stream. This poller does what the Lambda service does: read
the shard in order (GetRecords, with the function's role), invoke the function through the
Lambda Invoke API with batches of up to BatchSize, and advance only past what succeeded:
- a function error retries the same batch;
- with ReportBatchItemFailures, a reported `itemIdentifier` (a sequence number) retries from
  that record on, and the records before it are done;
- after MaximumRetryAttempts retries (-1: for ever, until the record would expire) the batch is
  skipped and its description sent to the OnFailure queue, as AWS's `DDBStreamBatchInfo`.
Each shard is read by one thread, so records of one item reach the function in order.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from imagejobs_tools.local.pollers import failed_message_ids

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs import SQSClient

LOG = logging.getLogger(__name__)
IDLE_SECONDS = 0.25  # Lambda reads each shard about four times a second
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class StreamMapping:
    stream_arn: str
    table_name: str
    function_name: str
    function_arn: str
    starting_position: str = "LATEST"
    batch_size: int = 100
    max_batching_window_seconds: int = 0
    report_batch_item_failures: bool = False
    maximum_retry_attempts: int = -1
    on_failure_queue_url: str | None = None


@dataclass
class StreamStats:
    batches: int = 0
    records: int = 0
    function_errors: int = 0
    item_failures: int = 0
    discarded_batches: int = 0  # retries exhausted: described on the OnFailure queue


def to_lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A stream record (GetRecords, as botocore parsed it) as the Lambda service hands it over."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0  # invocations of the current batch


class StreamPoller:
    """One thread per mapping, reading every shard of its stream in turn."""

    def __init__(
        self,
        mapping: StreamMapping,
        streams: Any,
        lambda_client: LambdaClient,
        sqs: SQSClient,
        region: str,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.mapping = mapping
        self._retry_seconds = retry_seconds
        self._streams = streams
        self._lambda = lambda_client
        self._sqs = sqs
        self._region = region
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = StreamStats()

    def start(self) -> None:
        shards = self._open_shards()
        self._thread = threading.Thread(
            target=self._run, args=(shards,), name=f"imagejobs-stream-poller-{self.mapping.function_name}"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOG.warning(
                    "stream poller for %s still running after %.0fs", self.mapping.function_name, timeout
                )
        self._thread = None

    def _open_shards(self) -> list[_Shard]:
        mapping = self.mapping
        # As the Lambda service does, with the function's role (AWSLambdaDynamoDBExecutionRole).
        listed = self._streams.list_streams(TableName=mapping.table_name)["Streams"]
        if mapping.stream_arn not in {s["StreamArn"] for s in listed}:
            raise RuntimeError(f"{mapping.table_name}: stream {mapping.stream_arn} is not the table's")
        description = self._streams.describe_stream(StreamArn=mapping.stream_arn)["StreamDescription"]
        return [
            _Shard(
                shard["ShardId"],
                self._streams.get_shard_iterator(
                    StreamArn=mapping.stream_arn,
                    ShardId=shard["ShardId"],
                    ShardIteratorType=mapping.starting_position,
                )["ShardIterator"],
            )
            for shard in description["Shards"]
        ]

    def _run(self, shards: list[_Shard]) -> None:
        while not self._stop.is_set():
            busy = False
            for shard in shards:
                try:
                    busy |= self._step(shard)
                except Exception as exc:
                    if self._stop.is_set():
                        return
                    if isinstance(exc, ClientError):
                        LOG.warning("stream poller for %s: %s", self.mapping.function_name, exc)
                    else:
                        LOG.exception("stream poller for %s failed; retrying", self.mapping.function_name)
                    self._stop.wait(self._retry_seconds)
            if not busy:
                self._stop.wait(IDLE_SECONDS)

    def _step(self, shard: _Shard) -> bool:
        """Read what is new, then deliver one batch; whether there was anything to do."""
        mapping = self.mapping
        if shard.iterator is not None and len(shard.pending) < mapping.batch_size:
            page = self._streams.get_records(ShardIterator=shard.iterator, Limit=1000)
            shard.iterator = page.get("NextShardIterator")
            shard.pending.extend(page.get("Records", []))
        if not shard.pending:
            return False
        oldest = shard.pending[0]["dynamodb"].get("ApproximateCreationDateTime")
        if (
            len(shard.pending) < mapping.batch_size
            and isinstance(oldest, datetime)
            and (datetime.now(UTC) - oldest).total_seconds() < mapping.max_batching_window_seconds
        ):
            return False  # the batching window is still open
        batch = shard.pending[: mapping.batch_size]
        done = self._deliver(shard, batch)
        del shard.pending[:done]
        return True

    def _deliver(self, shard: _Shard, batch: list[dict[str, Any]]) -> int:
        """Invoke once; how many records of the batch are finished with (done or discarded)."""
        mapping = self.mapping
        event = {"Records": [to_lambda_record(r, mapping.stream_arn, self._region) for r in batch]}
        response = self._lambda.invoke(FunctionName=mapping.function_name, Payload=json.dumps(event).encode())
        raw = response["Payload"].read()
        shard.attempts += 1
        self.stats.batches += 1
        self.stats.records += len(batch)
        sequence = [str(r["dynamodb"]["SequenceNumber"]) for r in batch]
        if response.get("FunctionError"):
            self.stats.function_errors += 1
            LOG.warning(
                "%s errored on a stream batch of %d: %s", mapping.function_name, len(batch), raw[:300]
            )
            return self._retry_or_discard(shard, batch, 0, "function error")
        failed: set[str] | None = set()
        if mapping.report_batch_item_failures:
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            failed = failed_message_ids(payload, set(sequence))
        if failed is None:
            return self._retry_or_discard(shard, batch, 0, "invalid batchItemFailures")
        if failed:
            self.stats.item_failures += 1
            first = min(sequence.index(identifier) for identifier in failed)
            return first + self._retry_or_discard(shard, batch[first:], first, "batch item failure")
        shard.attempts = 0
        return len(batch)

    def _retry_or_discard(
        self, shard: _Shard, failed: list[dict[str, Any]], done_before: int, why: str
    ) -> int:
        """0 to retry the failed records (after a pause), or their number once retries are spent."""
        limit = self.mapping.maximum_retry_attempts
        if done_before:
            shard.attempts = 1  # the records from the failed one on start their own count
        if limit < 0 or shard.attempts <= limit:
            self._stop.wait(self._retry_seconds)
            return 0
        self._send_on_failure(shard, failed, why)
        self.stats.discarded_batches += 1
        shard.attempts = 0
        return len(failed)

    def _send_on_failure(self, shard: _Shard, batch: list[dict[str, Any]], why: str) -> None:
        mapping = self.mapping
        LOG.error("%s: %d stream records skipped after retries (%s)", mapping.function_name, len(batch), why)
        if mapping.on_failure_queue_url is None:
            return
        arrivals = [r["dynamodb"].get("ApproximateCreationDateTime") for r in batch]
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": mapping.function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": shard.attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": why},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": str(batch[0]["dynamodb"]["SequenceNumber"]),
                "endSequenceNumber": str(batch[-1]["dynamodb"]["SequenceNumber"]),
                "approximateArrivalOfFirstRecord": _iso(arrivals[0]),
                "approximateArrivalOfLastRecord": _iso(arrivals[-1]),
                "batchSize": len(batch),
                "streamArn": mapping.stream_arn,
            },
        }
        self._sqs.send_message(QueueUrl=mapping.on_failure_queue_url, MessageBody=json.dumps(record))


def _iso(moment: Any) -> str | None:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None
