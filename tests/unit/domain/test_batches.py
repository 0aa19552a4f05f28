"""Batches (imagejobs.batches, imagejobs.batch_results): each job counted once, the batch complete
once whatever the order, its results written once, in line order, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from imagejobs import batch_results
from imagejobs.batch_results import BatchNotSettled, BatchRecords, write_results
from imagejobs.batches import (
    COMPLETED,
    OPEN,
    WRITING,
    BatchFiles,
    BatchNotOpen,
    BatchStore,
    batch_completed,
    batch_key,
    became_complete,
    counted_change,
    follow_change,
)
from imagejobs.events import JobEvent
from imagejobs.store import BatchLine, JobStore, to_dynamo
from imagejobs.webhooks import Delivery
from moto import mock_aws

from tests.unit.domain.fakes import create_jobs_table

T0 = 1_767_225_600.0
BUCKET = "imagejobs-outputs"
BATCH = "b-0123456789abcdef0123456789abcdef"


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any]]:
    with mock_aws():
        table = create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1"))
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield table, s3


def job(line: int, status: str = "COMPLETED", **extra: Any) -> dict[str, Any]:
    return {"jobId": f"{BATCH}-{line}", "batchId": BATCH, "batchLine": line, "status": status, **extra}


def finished(line: int, status: str = "COMPLETED") -> dict[str, Any]:
    """A finished job's record as the pipeline leaves it."""
    record = job(line, status, createdAt=f"2026-01-01T00:00:{line:02d}.000Z")
    if status == "COMPLETED":
        record |= {
            "creditsUsed": 3,
            "submittedAt": f"2026-01-01T00:01:{line:02d}.000Z",
            "completedAt": f"2026-01-01T00:02:{line:02d}.000Z",
            "outputs": [{"bucket": BUCKET, "key": f"outputs/{BATCH}-{line}/0.png", "uri": "s3://x"}],
            "latency": {"totalSeconds": float(line)},
        }
    elif status == "FAILED":
        record |= {
            "creditsUsed": 3,
            "creditsRefunded": True,
            "error": {"source": "provider", "code": "EMPTY_RESULT", "message": "no image"},
        }
    else:
        record |= {
            "error": {
                "source": "validation",
                "code": "VALIDATION_FAILED",
                "message": "bad",
                "fieldErrors": {"prompt": ["is required"]},
            }
        }
    return record


# ----------------------------------------------------------------------------- rules


def test_a_job_counts_when_it_enters_a_terminal_status_and_only_then() -> None:
    assert counted_change(job(1, "SUBMITTED"), job(1, "COMPLETED")) == (BatchLine(BATCH, 1), "COMPLETED")
    assert counted_change(None, job(2, "REJECTED")) == (BatchLine(BATCH, 2), "REJECTED")  # a new bad line
    assert counted_change(job(1, "RECEIVED"), job(1, "SUBMITTED")) is None
    assert counted_change(job(1, "COMPLETED"), job(1, "COMPLETED", batchCounted=True)) is None  # the mark
    assert counted_change(job(1, "FAILED"), job(1, "FAILED", retriedAs="x-r1")) is None
    assert counted_change({"status": "SUBMITTED"}, {"jobId": "solo", "status": "COMPLETED"}) is None
    # A retry of a batch's job (no line of its own) does not count again.
    assert counted_change(None, {"jobId": "x-r1", "batchId": BATCH, "status": "REJECTED"}) is None


def item(**fields: Any) -> dict[str, Any]:
    return {"jobId": batch_key(BATCH), "batchId": BATCH, "batchStatus": OPEN, "done": 0, **fields}


def test_a_batch_is_complete_once_whichever_of_its_last_job_and_its_size_comes_last() -> None:
    # The intake finishes reading after every job finished:
    assert became_complete(item(done=3), item(done=3, expected=3)) == BATCH
    # ...or the last job finishes after the intake:
    assert became_complete(item(done=2, expected=3), item(done=3, expected=3)) == BATCH
    assert became_complete(item(done=1, expected=3), item(done=2, expected=3)) is None
    assert became_complete(item(done=3, expected=3), item(done=3, expected=3, updatedAt="later")) is None
    assert became_complete(item(done=3), item(done=4)) is None  # size not known yet
    assert became_complete(item(done=3, expected=3), item(done=3, expected=3, batchStatus=WRITING)) is None


def test_batch_completed_is_published_for_the_change_into_completed_only() -> None:
    done = item(
        batchStatus=COMPLETED, bucket=BUCKET, resultsKey="batches/a.results.jsonl", summary={"jobs": 3}
    )
    event = batch_completed(item(batchStatus=WRITING), done)
    assert event is not None and event.detail_type == "Batch Completed"
    assert event.event_id == f"batch/{BATCH}/COMPLETED"
    assert event.detail["results"] == {"bucket": BUCKET, "key": "batches/a.results.jsonl"}
    assert batch_completed(done, {**done, "updatedAt": "later"}) is None
    assert batch_completed(None, job(1)) is None


def test_results_go_beside_an_uploaded_batch() -> None:
    files = BatchFiles.beside(BUCKET, "batches/2026/catalog.JSONL")
    assert (files.results_key, files.summary_key) == (
        "batches/2026/catalog.results.jsonl",
        "batches/2026/catalog.summary.json",
    )


# ----------------------------------------------------------------------------- counting


def put(table: Any, record: dict[str, Any]) -> None:
    table.put_item(Item=to_dynamo(record))


def open_batch(table: Any, expected: int | None = None, webhook_url: str | None = None) -> BatchStore:
    batches = BatchStore(table, sleep=lambda _: None)
    source = {"bucket": BUCKET, "key": "batches/cat.jsonl"}
    batches.open(BATCH, BatchFiles(BUCKET, "batches/cat"), source, webhook_url=webhook_url, now=T0)
    if expected is not None:
        batches.set_expected(BATCH, expected, now=T0)
    return batches


def test_a_change_delivered_twice_counts_its_job_once(aws: tuple[Any, Any]) -> None:
    table, _ = aws
    batches = open_batch(table)
    put(table, finished(1))
    assert batches.count_terminal(f"{BATCH}-1", BatchLine(BATCH, 1), "COMPLETED", now=T0)
    assert not batches.count_terminal(f"{BATCH}-1", BatchLine(BATCH, 1), "COMPLETED", now=T0)
    batch = batches.get(BATCH)
    assert batch is not None and (batch["done"], batch["countCOMPLETED"]) == (1, 1)
    assert JobStore(table).get(f"{BATCH}-1")["batchCounted"] is True  # type: ignore[index]


def test_opening_again_keeps_the_counts(aws: tuple[Any, Any]) -> None:
    table, _ = aws
    batches = open_batch(table)
    put(table, finished(1))
    batches.count_terminal(f"{BATCH}-1", BatchLine(BATCH, 1), "COMPLETED", now=T0)
    open_batch(table, expected=2)  # a redelivered or resumed intake
    batch = batches.get(BATCH)
    assert batch is not None and (batch["done"], batch["expected"], batch["batchStatus"]) == (1, 2, OPEN)


class Queue:
    def __init__(self) -> None:
        self.batches: list[str] = []

    def enqueue(self, batch_id: str) -> None:
        self.batches.append(batch_id)


class Publisher:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def publish(self, events: Sequence[JobEvent]) -> None:
        self.events.extend(events)


class Deliveries:
    def __init__(self) -> None:
        self.queued: list[Delivery] = []

    def enqueue(self, delivery: Delivery) -> None:
        self.queued.append(delivery)


def stream_of_changes(table: Any, write: Any) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """The (old, new) images of every item ``write()`` changes, as the change stream carries them."""
    before = {i["jobId"]: i for i in table.scan()["Items"]}
    write()
    after = {i["jobId"]: i for i in table.scan()["Items"]}
    return [(before.get(k), after.get(k)) for k in after if before.get(k) != after.get(k)]


@pytest.mark.parametrize("webhook_url", [None, "https://hooks.example.com/batches"])
def test_the_stream_counts_jobs_queues_the_complete_batch_once_and_publishes_its_completion(
    aws: tuple[Any, Any], webhook_url: str | None
) -> None:
    table, s3 = aws
    batches, queue, publisher = open_batch(table, webhook_url=webhook_url), Queue(), Publisher()
    deliveries = Deliveries()

    def stream(write_something: Any) -> None:
        """Follow every change, and the changes following makes, each delivered twice."""
        changes = stream_of_changes(table, write_something)
        while changes:
            pending = changes
            changes = stream_of_changes(
                table,
                lambda pending=pending: [
                    follow_change(
                        old, new, batches=batches, results=queue, publisher=publisher, webhooks=deliveries
                    )
                    for old, new in pending * 2
                ],
            )

    for line, status in ((1, "COMPLETED"), (2, "FAILED"), (3, "REJECTED")):
        stream(lambda line=line, status=status: put(table, finished(line, status)))
    batch = batches.get(BATCH)
    assert batch is not None and (batch["done"], batch["countFAILED"]) == (3, 1)
    assert queue.batches == []  # its size is not known yet
    # The intake's end comes last here: the batch item's change with its size completes it.
    stream(lambda: batches.set_expected(BATCH, 3, now=T0))
    assert queue.batches == [BATCH, BATCH]  # the one change delivered twice: two messages, one claim
    stream(lambda: write(table, s3))
    with pytest.raises(BatchNotOpen):
        write(table, s3)  # the duplicate message
    assert [e.event_id for e in publisher.events] == [f"batch/{BATCH}/COMPLETED"] * 2
    assert publisher.events[0].detail["summary"]["byStatus"] == {"COMPLETED": 1, "FAILED": 1, "REJECTED": 1}
    # A batch that names a webhook has its completion delivered there too (the jobs' own deliveries
    # are theirs); twice here, under one webhook-id the receiver deduplicates on.
    if webhook_url is None:
        assert deliveries.queued == []
    else:
        assert [(d.webhook_id, d.url) for d in deliveries.queued] == [
            (f"batch/{BATCH}/COMPLETED", webhook_url)
        ] * 2
        payload = deliveries.queued[0].payload
        assert payload["type"] == "Batch Completed" and payload["data"] == publisher.events[0].detail
        assert payload["timestamp"] == publisher.events[0].detail["completedAt"] is not None


# ----------------------------------------------------------------------------- results


def write(table: Any, s3: Any) -> dict[str, Any]:
    return write_results(
        BATCH, batches=BatchStore(table), records=BatchRecords(table), s3=s3, lease_seconds=60, now=T0 + 100
    )


def results_of(s3: Any, key: str = "batches/cat.results.jsonl") -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def settled_batch(table: Any, statuses: dict[int, str]) -> None:
    batches = open_batch(table)
    for line, status in statuses.items():
        put(table, finished(line, status))
        batches.count_terminal(f"{BATCH}-{line}", BatchLine(BATCH, line), status, now=T0)
    batches.set_expected(BATCH, len(statuses), now=T0)


def test_results_list_every_line_in_input_order_and_the_summary_counts_them(aws: tuple[Any, Any]) -> None:
    table, s3 = aws
    settled_batch(table, {3: "REJECTED", 1: "COMPLETED", 10: "FAILED", 2: "COMPLETED"})
    summary = write(table, s3)
    lines = results_of(s3)
    assert [entry["line"] for entry in lines] == [1, 2, 3, 10]
    first, _, rejected, failed = lines
    assert first["outputs"] == [f"outputs/{BATCH}-1/0.png"] and first["creditsUsed"] == 3
    assert first["timings"]["totalSeconds"] == 1.0
    assert rejected["error"]["fieldErrors"] == {"prompt": ["is required"]}
    assert failed["error"]["code"] == "EMPTY_RESULT" and failed["creditsRefunded"] == 3
    assert summary["byStatus"] == {"COMPLETED": 2, "FAILED": 1, "REJECTED": 1}
    assert (summary["creditsUsed"], summary["creditsRefunded"], summary["creditsSpent"]) == (9, 3, 6)
    assert summary["latencySeconds"] == {"p50": 1.0, "p95": 2.0}
    assert (summary["firstSubmitAt"], summary["lastCompletionAt"]) == (
        "2026-01-01T00:01:01.000Z",
        "2026-01-01T00:02:02.000Z",
    )
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key="batches/cat.summary.json")["Body"].read())
    assert stored == summary
    batch = BatchStore(table).get(BATCH)
    assert batch is not None and batch["batchStatus"] == COMPLETED and batch["summary"]["jobs"] == 4


def test_a_large_batch_is_streamed_in_parts(aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    table, s3 = aws
    monkeypatch.setattr(batch_results, "PART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    prompt = "p" * 2000
    batches = open_batch(table)
    with table.batch_writer() as writer:
        for line in range(1, 3001):
            writer.put_item(
                Item=to_dynamo(finished(line) | {"prompt": prompt, "error": {"message": "e" * 2000}})
            )
    table.update_item(
        Key={"jobId": batch_key(BATCH)},
        UpdateExpression="SET done = :n",
        ExpressionAttributeValues={":n": 3000},
    )
    batches.set_expected(BATCH, 3000, now=T0)
    parts: list[int] = []
    upload_part = s3.upload_part

    def counting_upload_part(**kwargs: Any) -> Any:
        parts.append(len(kwargs["Body"]))
        return upload_part(**kwargs)

    monkeypatch.setattr(s3, "upload_part", counting_upload_part)
    summary = write(table, s3)
    assert summary["jobs"] == 3000 and len(parts) >= 2
    assert all(size >= 5 * 1024 * 1024 for size in parts[:-1])
    assert [entry["line"] for entry in results_of(s3)] == list(range(1, 3001))


def test_a_batch_the_index_does_not_show_whole_is_released_for_a_retry(aws: tuple[Any, Any]) -> None:
    table, s3 = aws
    settled_batch(table, {1: "COMPLETED", 2: "COMPLETED"})
    BatchStore(table).set_expected(BATCH, 3, now=T0)  # a line the index does not show yet
    table.update_item(
        Key={"jobId": batch_key(BATCH)}, UpdateExpression="SET done = :n", ExpressionAttributeValues={":n": 3}
    )
    with pytest.raises(BatchNotSettled, match="2 of the batch's 3"):
        write(table, s3)
    assert BatchStore(table).get(BATCH)["batchStatus"] == OPEN  # type: ignore[index]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="batches/cat.results")


def test_a_retry_after_a_crash_keeps_the_results_file_already_written(aws: tuple[Any, Any]) -> None:
    table, s3 = aws
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    settled_batch(table, {1: "COMPLETED"})
    batches = BatchStore(table)
    complete = batches.complete

    def crash(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the function died after writing both files")

    batches.complete = crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        write_results(BATCH, batches=batches, records=BatchRecords(table), s3=s3, lease_seconds=60, now=T0)
    batches.complete = complete  # type: ignore[method-assign]
    with pytest.raises(BatchNotOpen):  # the lease still holds
        write_results(
            BATCH, batches=batches, records=BatchRecords(table), s3=s3, lease_seconds=60, now=T0 + 1
        )
    write_results(BATCH, batches=batches, records=BatchRecords(table), s3=s3, lease_seconds=60, now=T0 + 61)
    for key in ("batches/cat.results.jsonl", "batches/cat.summary.json"):
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
        assert len(versions) == 1, key
    assert batches.get(BATCH)["batchStatus"] == COMPLETED  # type: ignore[index]


class LaggingIndex:
    """The jobs table as a GSI that lags shows it: queries return one line still RUNNING."""

    def __init__(self, table: Any, lagging_line: int) -> None:
        self._table = table
        self._line = lagging_line

    def query(self, **kwargs: Any) -> Any:
        page = self._table.query(**kwargs)
        for item in page.get("Items", []):
            if int(item["batchLine"]) == self._line:
                item["status"] = "RUNNING"
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def test_a_record_the_index_shows_unfinished_is_read_again_from_the_table(aws: tuple[Any, Any]) -> None:
    table, s3 = aws
    settled_batch(table, {1: "COMPLETED", 2: "FAILED"})
    summary = write_results(
        BATCH,
        batches=BatchStore(table),
        records=BatchRecords(LaggingIndex(table, 2)),
        s3=s3,
        lease_seconds=60,
        now=T0 + 100,
    )
    assert [entry["status"] for entry in results_of(s3)] == ["COMPLETED", "FAILED"]
    assert summary["jobs"] == 2


def test_a_results_file_that_fails_part_way_is_aborted_and_the_batch_released(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table, s3 = aws
    monkeypatch.setattr(batch_results, "PART_BYTES", 1)  # the first line starts a multipart upload
    settled_batch(table, {line: "COMPLETED" for line in range(1, 4)})
    calls: list[str] = []

    def failing_upload_part(**kwargs: Any) -> Any:
        calls.append("upload_part")
        raise ConnectionError("the network went away mid-upload")

    monkeypatch.setattr(s3, "upload_part", failing_upload_part)
    with pytest.raises(ConnectionError):
        write(table, s3)
    assert calls and s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert BatchStore(table).get(BATCH)["batchStatus"] == OPEN  # type: ignore[index]
