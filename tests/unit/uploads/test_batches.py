"""JSONL batches: streamed, one job per good line, bad lines reported beside the batch, enqueued once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ResponseStreamingError
from imagejobs.batches import BatchStore
from imagejobs.jobs import parse_job
from imagejobs.jsonl import iter_capped_lines
from imagejobs.uploads import (
    MAX_LINE_BYTES,
    STREAM_REOPENS,
    CheckpointPolicy,
    S3ObjectRef,
    UploadContext,
    process_batch,
)

from tests.unit.uploads.conftest import BUCKET, Aws, s3_event
from tests.unit.uploads.test_images import deliver

# line number -> (bad line, the field the report must name)
BAD_LINES: dict[int, tuple[str, str]] = {
    7: ('{"aspectRatio": "1:1"}', "prompt"),
    100: ('{"prompt": "x", "aspectRatio": "7:3"}', "aspectRatio"),
    101: ("{not json", "body"),
    250: ('["a", "list"]', "body"),
    333: ('{"prompt": "x", "colour": "red"}', "colour"),
    480: ('{"prompt": "x", "jobId": "has spaces!"}', "jobId"),
    512: ('{"prompt": "x", "outputPrefix": "../up"}', "outputPrefix"),
    640: ('{"prompt": "x", "outputPrefix": "inputs/loop/"}', "outputPrefix"),
    777: ('{"prompt": "x", "inputImageUrls": ["http://169.254.169.254/latest"]}', "inputImageUrls"),
    999: ('{"prompt": "   "}', "prompt"),
}


def batch_lines(total: int = 1000) -> list[str]:
    lines = []
    for number in range(1, total + 1):
        if number in BAD_LINES:
            lines.append(BAD_LINES[number][0])
        else:
            lines.append(json.dumps({"prompt": f"catalog item {number}", "aspectRatio": "1:1"}))
    return lines


def context(aws: Aws, *, s3: Any = None, sqs: Any = None) -> UploadContext:
    """The moto clients of `aws` and its fake clock, with `s3` or `sqs` put in their place."""
    return UploadContext(s3 or aws.s3, sqs or aws.sqs, aws.store, aws.settings, aws.clock)


def upload(aws: Aws, key: str, lines: list[str], newline: str = "\n") -> str:
    return aws.put(key, (newline.join(lines) + newline).encode("utf-8"))


class RecordingS3:
    """Passes calls to moto's client, recording the size of every read of a streamed object body."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3
        self.reads: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        response = dict(self._s3.get_object(**kwargs))
        body = response["Body"]
        original = body.read

        def read(amt: int | None = None) -> bytes:
            self.reads.append(-1 if amt is None else amt)
            return bytes(original(amt))

        body.read = read
        return response


def test_thousand_lines_with_ten_bad_ones_make_990_jobs_and_a_report_naming_the_ten(aws: Aws) -> None:
    key = "batches/2026/catalog.jsonl"
    etag = upload(aws, key, batch_lines())
    s3, sqs = RecordingS3(aws.s3), aws.sqs
    outcome = process_batch(S3ObjectRef(BUCKET, key, etag), context(aws, s3=s3, sqs=sqs), chunk_bytes=4096)
    assert outcome.ack and outcome.reason == "processed"
    messages = aws.messages()
    assert len(messages) == 990
    assert len({m["jobId"] for m in messages}) == 990
    prefix = outcome.report["jobIdPrefix"]  # type: ignore[index]
    assert {m["jobId"] for m in messages} == {f"{prefix}{n}" for n in range(1, 1001) if n not in BAD_LINES}
    for message in messages[:5]:
        parse_job(message, "unused", settings=aws.settings)  # the intake accepts every enqueued message
    # Streamed: the body was read in bounded chunks, sent 10 at a time.
    assert s3.reads and max(s3.reads) <= 4096
    assert max(sqs.batches) <= 10 and sum(sqs.batches) == 990
    report = aws.report(key)
    assert report["status"] == "COMPLETE"
    assert (report["lines"], report["enqueued"], report["badLineCount"]) == (1000, 990, 10)
    # The end of the object (before: the size of the last message sent, a name reused in the loop).
    assert report["nextByte"] == aws.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    assert report["source"] == {"bucket": BUCKET, "key": key, "etag": etag, "versionId": None}
    named = {entry["line"]: entry["field"] for entry in report["badLines"]}
    assert named == {line: field for line, (_, field) in BAD_LINES.items()}
    assert all(entry["reason"] for entry in report["badLines"])
    # Every job is placed in the batch; every bad line has a REJECTED record naming its field.
    batch_id = prefix.rstrip("-")
    assert {(m["batchId"], m["batchLine"]) for m in messages} == {
        (batch_id, n) for n in range(1, 1001) if n not in BAD_LINES
    }
    for entry in report["badLines"]:
        record = aws.store.get(entry["jobId"])
        assert record is not None and record["status"] == "REJECTED"
        assert (record["batchId"], record["batchLine"]) == (batch_id, entry["line"])
        assert entry["field"] in record["error"]["fieldErrors"]
    batch = BatchStore(aws.store.table).get(batch_id)
    assert batch is not None
    assert (batch["expected"], batch["batchStatus"], batch["done"]) == (1000, "OPEN", 0)
    assert (batch["bucket"], batch["resultsKey"]) == (BUCKET, "batches/2026/catalog.results.jsonl")


def test_redelivered_batch_event_enqueues_nothing_twice(aws: Aws) -> None:
    key = "batches/again.jsonl"
    etag = upload(aws, key, batch_lines(30))
    deliver(aws, s3_event(key, etag=etag))
    first = aws.messages()
    assert len(first) == 29  # line 7 is bad
    [outcome] = deliver(aws, s3_event(key, etag=etag))
    assert outcome.reason == "already processed"
    assert aws.messages() == []


def test_a_changed_batch_is_a_new_batch(aws: Aws) -> None:
    key = "batches/changed.jsonl"
    deliver(aws, s3_event(key, etag=upload(aws, key, batch_lines(3))))
    first = {m["jobId"] for m in aws.messages()}
    deliver(aws, s3_event(key, etag=upload(aws, key, batch_lines(4))))
    second = {m["jobId"] for m in aws.messages()}
    assert len(first) == 3 and len(second) == 4 and not first & second


def test_lines_may_name_their_own_job_ids_once(aws: Aws) -> None:
    key = "batches/ids.jsonl"
    lines = [
        json.dumps({"jobId": "mine-1", "prompt": "a"}),
        "",
        json.dumps({"jobId": "mine-1", "prompt": "b"}),
        json.dumps({"prompt": "c"}),
    ]
    deliver(aws, s3_event(key, etag=upload(aws, key, lines, newline="\r\n")))
    messages = aws.messages()
    assert [m["prompt"] for m in messages] == ["a", "c"]
    assert messages[0]["jobId"] == "mine-1" and messages[1]["jobId"].endswith("-4")
    report = aws.report(key)
    assert report["blankLines"] == 1
    [bad] = report["badLines"]
    assert bad["line"] == 3 and bad["field"] == "jobId" and "earlier line" in bad["reason"]
    # The clash is recorded under the line's own id; the earlier line's job id stays its own.
    assert bad["jobId"].endswith("-3") and aws.store.get(bad["jobId"])["status"] == "REJECTED"  # type: ignore[index]


def test_a_bad_line_is_recorded_under_the_job_id_it_names_and_lines_cannot_name_a_batch(aws: Aws) -> None:
    key = "batches/named.jsonl"
    lines = [
        json.dumps({"jobId": "sku-1", "prompt": "x", "aspectRatio": "7:3"}),
        json.dumps({"prompt": "y", "batchId": "elsewhere", "batchLine": 9}),
    ]
    deliver(aws, s3_event(key, etag=upload(aws, key, lines)))
    assert aws.messages() == []
    named = aws.store.get("sku-1")
    assert named is not None and named["status"] == "REJECTED" and named["batchLine"] == 1
    assert "aspectRatio" in named["error"]["fieldErrors"]
    second = aws.report(key)["badLines"][1]
    assert second["line"] == 2 and set(second["fieldErrors"]) == {"batchId", "batchLine"}
    assert "set by the batch upload" in second["reason"]


def test_large_messages_are_split_under_the_sqs_batch_size_limit(aws: Aws) -> None:
    key = "batches/large.jsonl"
    # An unknown model has the generic 100,000-character prompt cap: ~90 KB per message.
    lines = [json.dumps({"prompt": f"{n} " + "x" * 90_000, "model": "acme/big"}) for n in range(6)]
    sqs = aws.sqs
    process_batch(S3ObjectRef(BUCKET, key, upload(aws, key, lines)), context(aws, sqs=sqs))
    assert len(aws.messages()) == 6
    assert len(sqs.batches) >= 3 and max(sqs.batches) <= 2


class BreakingS3:
    """Passes calls to moto's client; each body breaks off after `chunks_before_break` chunks, as a
    connection S3 closed does (the first `breaks` bodies only)."""

    def __init__(self, s3: Any, *, breaks: int, chunks_before_break: int = 2) -> None:
        self._s3 = s3
        self.breaks = breaks
        self.chunks_before_break = chunks_before_break
        self.gets: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.gets.append(kwargs)
        response = dict(self._s3.get_object(**kwargs))
        bodies_read = sum(1 for g in self.gets if g["Key"].endswith(".jsonl"))
        if kwargs["Key"].endswith(".jsonl") and bodies_read <= self.breaks:
            body, limit = response["Body"], self.chunks_before_break
            original = body.iter_chunks

            def iter_chunks(chunk_size: int) -> Any:
                for index, chunk in enumerate(original(chunk_size)):
                    if index == limit:
                        raise ResponseStreamingError(error="Connection broken: IncompleteRead")
                    yield chunk

            body.iter_chunks = iter_chunks
        return response


def test_a_body_that_breaks_off_is_read_on_from_the_byte_reached(aws: Aws) -> None:
    key = "batches/broken.jsonl"
    etag = upload(aws, key, batch_lines(1000))
    s3 = BreakingS3(aws.s3, breaks=2)
    outcome = process_batch(S3ObjectRef(BUCKET, key, etag), context(aws, s3=s3), chunk_bytes=4096)
    assert outcome.ack and outcome.reason == "processed"
    # Every good line once: nothing read twice, nothing skipped at the breaks.
    ids = [m["jobId"] for m in aws.messages()]
    assert len(ids) == len(set(ids)) == 1000 - len(BAD_LINES)
    reads = [g for g in s3.gets if g["Key"] == key]
    assert [g.get("Range") for g in reads] == [None, "bytes=8192-", "bytes=16384-"]
    assert all(g["IfMatch"] == f'"{etag}"' for g in reads)  # the same object, never a newer one


def test_a_body_that_keeps_breaking_fails_the_invocation_after_the_reopens(aws: Aws) -> None:
    key = "batches/unreadable.jsonl"
    etag = upload(aws, key, batch_lines(1000))
    s3 = BreakingS3(aws.s3, breaks=STREAM_REOPENS + 1, chunks_before_break=1)
    with pytest.raises(ResponseStreamingError):
        process_batch(S3ObjectRef(BUCKET, key, etag), context(aws, s3=s3), chunk_bytes=4096)
    assert len([g for g in s3.gets if g["Key"] == key]) == STREAM_REOPENS + 1


def test_a_batch_that_runs_out_of_time_resumes_from_its_checkpoint(aws: Aws) -> None:
    key = "batches/resume.jsonl"
    ref = S3ObjectRef(BUCKET, key, upload(aws, key, batch_lines(250)))
    calls = iter(range(10_000))

    def time_left() -> float:
        """Plenty for the first 100 lines, then less than the function keeps for a checkpoint."""
        return 600.0 if next(calls) < 100 else 1.0

    # Far from a regular checkpoint (every 10,000 lines): time is checked at every line.
    first = process_batch(ref, context(aws), time_left=time_left)
    assert first.action == "resume"
    partial = aws.report(key)
    # Checkpoints fall where nothing is buffered: at or just after line 101.
    assert partial["status"] == "IN_PROGRESS" and 101 <= partial["nextLine"] <= 111
    # nextByte is where line nextLine starts: the resume asks only for the rest of the object.
    body = aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert partial["nextByte"] == len(b"".join(body.splitlines(keepends=True)[: partial["nextLine"] - 1]))
    s3 = BreakingS3(aws.s3, breaks=0)
    second = process_batch(ref, context(aws, s3=s3), checkpoints=CheckpointPolicy(every_lines=100))
    assert second.ack
    assert [g.get("Range") for g in s3.gets if g["Key"] == key] == [f"bytes={partial['nextByte']}-"]
    ids = [m["jobId"] for m in aws.messages()]
    assert len(ids) == len(set(ids)) == 250 - sum(1 for n in BAD_LINES if n <= 250)
    report = aws.report(key)
    assert report["status"] == "COMPLETE" and report["badLineCount"] == 4  # lines 7, 100, 101, 250
    assert [entry["line"] for entry in report["badLines"]] == [7, 100, 101, 250]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_capped_lines_split_any_chunking_and_never_buffer_long_lines(chunk: int) -> None:
    data = b'{"a":1}\r\n\n' + b"y" * 50 + b"\nlast"
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    lines = list(iter_capped_lines(chunks, max_line_bytes=20))
    assert lines == [(1, b'{"a":1}', 8), (2, b"", 0), (3, None, 50), (4, b"last", 4)]


def test_overlong_line_is_reported_not_enqueued(aws: Aws) -> None:
    key = "batches/overlong.jsonl"
    lines = [json.dumps({"prompt": "ok"}), json.dumps({"prompt": "z" * (MAX_LINE_BYTES + 10)})]
    deliver(aws, s3_event(key, etag=upload(aws, key, lines)))
    assert len(aws.messages()) == 1
    [bad] = aws.report(key)["badLines"]
    assert bad["line"] == 2 and bad["field"] == "body" and "limit" in bad["reason"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 64])
def test_a_byte_order_mark_at_the_start_is_not_part_of_line_one(chunk: int) -> None:
    data = b'\xef\xbb\xbf{"a":1}\n\xef\xbb\xbf{"b":2}\n'
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    # Only the stream's first three bytes: a mark inside the file is content (and bad JSON).
    assert list(iter_capped_lines(chunks, max_line_bytes=20)) == [
        (1, b'{"a":1}', 7),
        (2, b'\xef\xbb\xbf{"b":2}', 10),
    ]


def test_a_batch_saved_with_a_byte_order_mark_is_read_as_the_cli_reads_it(aws: Aws) -> None:
    key = "batches/bom.jsonl"
    body = "\ufeff" + "\n".join(json.dumps({"prompt": p}) for p in ("first", "second")) + "\n"
    deliver(aws, s3_event(key, etag=aws.put(key, body.encode("utf-8"))))
    assert [m["prompt"] for m in aws.messages()] == ["first", "second"]
    assert aws.report(key)["badLineCount"] == 0


def test_a_batch_webhook_in_the_objects_metadata_is_every_lines_unless_the_line_names_its_own(
    aws: Aws,
) -> None:
    key = "batches/hooked.jsonl"
    batch_hook, own_hook = "https://93.184.216.34/batch-hook", "https://93.184.216.35/own"
    lines = [json.dumps({"prompt": "a"}), json.dumps({"prompt": "b", "webhookUrl": own_hook})]
    body = ("\n".join(lines) + "\n").encode()
    etag = aws.put(key, body, Metadata={"webhook-url": batch_hook})
    deliver(aws, s3_event(key, etag=etag))
    assert [m.get("webhookUrl") for m in aws.messages()] == [batch_hook, own_hook]


def test_a_batch_webhook_that_fails_the_url_rule_rejects_the_lines_that_would_use_it(aws: Aws) -> None:
    key = "batches/badhook.jsonl"
    own_hook = "https://93.184.216.35/own"
    lines = [json.dumps({"prompt": "a"}), json.dumps({"prompt": "b", "webhookUrl": own_hook})]
    etag = aws.put(key, ("\n".join(lines) + "\n").encode(), Metadata={"webhook-url": "https://10.0.0.7/hook"})
    deliver(aws, s3_event(key, etag=etag))
    # The line with a webhook of its own goes; the other would run with no notifications: rejected.
    assert [m.get("webhookUrl") for m in aws.messages()] == [own_hook]
    [bad] = aws.report(key)["badLines"]
    assert bad["line"] == 1 and bad["field"] == "webhookUrl"
    assert "x-amz-meta-webhook-url" in bad["reason"] and "10.0.0.7" in bad["reason"]
    record = aws.store.get(bad["jobId"])
    assert record is not None and record["status"] == "REJECTED"


class StallingSqs:
    """The jobs queue, whose sends take 10 s each on the clock and fail from the `fail_from`-th on
    (an invocation ended by a stalled call: a timeout, as Lambda ends it, or a crash)."""

    def __init__(self, queue: Any, clock: Any, fail_from: int) -> None:
        self.queue, self.clock, self.fail_from, self.sends = queue, clock, fail_from, 0

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.sends += 1
        if self.sends >= self.fail_from:
            raise TimeoutError("the invocation ended here")
        self.clock.advance(10)
        result: dict[str, Any] = self.queue.send_message_batch(**kwargs)
        return result


def test_a_batch_saves_its_progress_every_minute_so_an_ended_invocation_does_not_start_over(aws: Aws) -> None:
    key = "batches/stalled.jsonl"
    ref = S3ObjectRef(BUCKET, key, upload(aws, key, batch_lines(250)))
    # 10 s per send of 10 lines; the invocation ends at its 20th send, far from 10,000 lines.
    with pytest.raises(TimeoutError):
        process_batch(ref, context(aws, sqs=StallingSqs(aws.sqs, aws.clock, fail_from=20)))
    saved = aws.report(key)
    assert saved["status"] == "IN_PROGRESS"
    # Saved at least every 60 s of reading (6 sends): the last save fell after the 18th send at latest.
    assert 120 < saved["nextLine"] <= 200
    first = {m["jobId"]: int(m["batchLine"]) for m in aws.messages()}
    retry = process_batch(ref, context(aws))
    assert retry.ack and aws.report(key)["status"] == "COMPLETE"
    retried = {m["jobId"]: int(m["batchLine"]) for m in aws.messages()}
    assert min(retried.values()) >= saved["nextLine"]  # went on from the save, not from line 1
    # Every good line enqueued; only the lines sent after the last save were sent twice.
    assert len(first | retried) == 250 - sum(1 for n in BAD_LINES if n <= 250)
    sent_twice = set(first) & set(retried)
    assert all(first[job_id] >= saved["nextLine"] for job_id in sent_twice)


def test_without_time_passing_a_batch_saves_only_every_10000_lines(aws: Aws) -> None:
    key = "batches/quick.jsonl"
    ref = S3ObjectRef(BUCKET, key, upload(aws, key, batch_lines(250)))
    with pytest.raises(TimeoutError):
        process_batch(
            ref,
            context(aws, sqs=StallingSqs(aws.sqs, aws.clock, fail_from=20)),
            checkpoints=CheckpointPolicy(every_seconds=3600),
        )
    with pytest.raises(aws.s3.exceptions.NoSuchKey):  # nothing saved: a retry starts at line 1
        aws.report(key)


def test_a_checkpoint_without_a_byte_offset_resumes_by_skipping_the_lines_done(aws: Aws) -> None:
    key = "batches/older.jsonl"
    ref = S3ObjectRef(BUCKET, key, upload(aws, key, batch_lines(30)))
    with pytest.raises(TimeoutError):  # saved after the first send (10 s passed), ended at the second
        process_batch(
            ref,
            context(aws, sqs=StallingSqs(aws.sqs, aws.clock, fail_from=2)),
            checkpoints=CheckpointPolicy(every_seconds=10),
        )
    saved = aws.report(key)
    resume_line = saved["nextLine"]
    assert resume_line == 12 and saved["nextByte"] > 0  # ten good lines: 1-11 less bad line 7
    del saved["nextByte"]  # as written before offsets were saved
    aws.put(key + ".report.json", json.dumps(saved).encode())
    first = {m["jobId"] for m in aws.messages()}
    retry = process_batch(ref, context(aws))
    assert retry.ack
    lines = sorted(int(m["batchLine"]) for m in aws.messages())
    assert lines == [n for n in range(resume_line, 31) if n not in BAD_LINES]
    assert len(first) == 10


def test_a_batch_paused_after_its_last_line_completes_without_reading_again(aws: Aws) -> None:
    key = "batches/ends.jsonl"
    # Ten good lines (7 is bad): the buffer empties, and the time runs out, at the last line.
    ref = S3ObjectRef(BUCKET, key, upload(aws, key, batch_lines(11)))
    size = aws.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    paused = process_batch(ref, context(aws), time_left=lambda: 1.0)
    assert paused.action == "resume"
    assert aws.report(key)["nextLine"] == 12 and aws.report(key)["nextByte"] == size
    s3 = BreakingS3(aws.s3, breaks=0)
    resumed = process_batch(ref, context(aws, s3=s3))
    assert resumed.ack and aws.report(key)["status"] == "COMPLETE" and aws.report(key)["lines"] == 11
    assert not [g for g in s3.gets if g["Key"] == key]  # nothing left to read: no range from the end (416)
