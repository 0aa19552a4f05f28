"""The local stack's DynamoDB Streams event source: Lambda's order, retry and on-failure rules."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from imagejobs_tools.local.stream_pollers import StreamMapping, StreamPoller

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs/stream/2026-12-02T00:00:00.000"


def stream_record(n: int) -> dict[str, Any]:
    return {
        "eventID": f"e{n}",
        "eventName": "MODIFY",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2026, 12, 2, tzinfo=UTC),
            "Keys": {"jobId": {"S": f"j{n}"}},
            "NewImage": {"jobId": {"S": f"j{n}"}},
            "SequenceNumber": str(100 + n),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


class FakeStreams:
    """One shard holding `records`; each GetRecords returns what is new since the iterator."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def list_streams(self, TableName: str) -> dict[str, Any]:
        return {"Streams": [{"StreamArn": STREAM, "TableName": TableName}]}

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-1"}]}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str) -> dict[str, Any]:
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        start = int(ShardIterator)
        page = self.records[start : start + Limit]
        return {"Records": page, "NextShardIterator": str(start + len(page))}


class FakeLambda:
    """Answers each invocation with the next scripted reply: "ok", "error" or a set of failed ids."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.batches: list[list[str]] = []
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        event = json.loads(Payload)
        self.events.append(event)
        self.batches.append([r["dynamodb"]["SequenceNumber"] for r in event["Records"]])
        reply = self.replies.pop(0) if self.replies else "ok"
        if not self.replies:
            self.done.set()
        if reply == "error":
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(b'{"errorType": "RuntimeError"}')}
        failures = [] if reply == "ok" else [{"itemIdentifier": i} for i in sorted(reply)]
        return {"Payload": io.BytesIO(json.dumps({"batchItemFailures": failures}).encode())}


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self.sent.append({"queue": QueueUrl, "body": json.loads(MessageBody)})
        return {"MessageId": str(len(self.sent))}


def run(records: int, replies: list[Any], **mapping: Any) -> tuple[FakeLambda, FakeSqs, StreamPoller]:
    functions, sqs = FakeLambda(replies), FakeSqs()
    poller = StreamPoller(
        StreamMapping(
            stream_arn=STREAM,
            table_name="jobs",
            function_name="fn",
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
            starting_position="TRIM_HORIZON",
            report_batch_item_failures=True,
            on_failure_queue_url="http://127.0.0.1/123456789012/on-failure",
            **mapping,
        ),
        FakeStreams([stream_record(n) for n in range(records)]),
        functions,
        sqs,
        "us-east-1",
        retry_seconds=0.01,
    )
    poller.start()
    try:
        assert functions.done.wait(10)
        delivered = sum(len(b) for b in functions.batches)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and poller.stats.records < delivered:
            time.sleep(0.01)
        time.sleep(0.1)  # nothing more may come
    finally:
        poller.stop()
    return functions, sqs, poller


def test_records_reach_the_function_in_order_in_batches_as_lambda_shapes_them() -> None:
    functions, _, _ = run(5, ["ok", "ok", "ok"], batch_size=2)
    assert functions.batches == [["100", "101"], ["102", "103"], ["104"]]
    record = functions.events[0]["Records"][0]
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:dynamodb",
        STREAM,
        "us-east-1",
    )
    assert record["dynamodb"]["ApproximateCreationDateTime"] == datetime(2026, 12, 2, tzinfo=UTC).timestamp()


def test_a_function_error_retries_the_same_batch() -> None:
    functions, sqs, poller = run(3, ["error", "error", "ok"], batch_size=10)
    assert functions.batches == [["100", "101", "102"]] * 3
    assert poller.stats.function_errors == 2 and not sqs.sent


def test_a_reported_item_failure_resumes_from_that_record() -> None:
    functions, _, _ = run(4, [{"102"}, "ok"], batch_size=10)
    assert functions.batches == [["100", "101", "102", "103"], ["102", "103"]]


def test_spent_retries_describe_the_batch_on_the_failure_queue_and_move_on() -> None:
    functions, sqs, poller = run(3, ["error", "error", "error", "ok"], batch_size=2, maximum_retry_attempts=2)
    # One attempt and two retries of the first batch, then the next records.
    assert functions.batches == [["100", "101"]] * 3 + [["102"]]
    [message] = sqs.sent
    info = message["body"]["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("100", "101", 2)
    assert info["streamArn"] == STREAM and info["shardId"] == "shard-1"
    assert message["body"]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["body"]["requestContext"]["approximateInvokeCount"] == 3
    assert poller.stats.discarded_batches == 1
