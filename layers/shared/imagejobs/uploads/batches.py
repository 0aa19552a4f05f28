"""JSONL batch uploads: streamed line by line, each good line enqueued once, each bad one recorded
as REJECTED; the report beside the batch is also its resume checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagejobs import jobs, urls
from imagejobs.batches import BatchFiles, BatchStore
from imagejobs.config import S3IntakeSettings
from imagejobs.intake import partial_request
from imagejobs.jsonl import iter_positioned_lines
from imagejobs.observability import count, logger
from imagejobs.store import BatchLine, JobStore, iso
from imagejobs.uploads.context import UploadContext
from imagejobs.uploads.events import (
    REPORT_SUFFIX,
    S3ObjectRef,
    UploadOutcome,
    derived_job_id,
    trigger_prefix_problem,
    version_of,
)
from imagejobs.uploads.objects import head_object, object_chunks, read_small_json, user_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

MAX_LINE_BYTES = jobs.JobLimits().max_body_bytes
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 256 * 1024 - 4 * 1024  # SendMessageBatch total payload cap, with room for ids
MAX_REPORTED_BAD_LINES = 1000


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a batch saves its progress (its intake report), so that a later invocation goes on from
    there. Saved only where no line is buffered, so a line is never sent twice by a resume."""

    every_lines: int = 10_000
    # An invocation that ends unplanned (a timeout behind a stalled call, a crash) loses at most
    # this much reading: its retry restarts from the last save, not from line 1.
    every_seconds: float = 60.0
    # Below this, the invocation saves, stops and is resumed in a new one (S3IntakeFunction).
    min_time_left_seconds: float = 30.0


SEND_ATTEMPTS = 4
# A batch object's x-amz-meta-webhook-url: the webhookUrl of every line that names none.
BATCH_WEBHOOK_METADATA = "webhook-url"
BATCH_LINES_ENQUEUED = "BatchJobsEnqueued"
BATCH_LINES_BAD = "BatchLinesRejected"


class BatchEnqueueError(RuntimeError):
    """SendMessageBatch kept failing for some entries; the S3 event is retried (resuming the batch)."""


@dataclass
class BatchReport:
    """The report written beside the batch (``<batch key>.report.json``); also the resume checkpoint."""

    bucket: str
    key: str
    etag: str
    version_id: str | None
    job_id_prefix: str
    status: str = "IN_PROGRESS"
    next_line: int = 1
    # Where line `next_line` starts in the object: a resume asks for the rest from there (a
    # ranged GET), not for the whole object again. 0 with next_line > 1: a report from before
    # offsets were saved, whose resume reads from the start and skips the lines done.
    next_byte: int = 0
    lines: int = 0
    blank_lines: int = 0
    enqueued: int = 0
    bad_line_count: int = 0
    bad_lines: list[dict[str, Any]] = field(default_factory=list)
    started_at: str = ""
    updated_at: str = ""

    @property
    def report_key(self) -> str:
        return self.key + REPORT_SUFFIX

    def add_bad(self, line: int, field_errors: Mapping[str, list[str]], job_id: str | None = None) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < MAX_REPORTED_BAD_LINES:
            first_field, reasons = next(iter(field_errors.items()))
            entry: dict[str, Any] = {
                "line": line,
                "field": first_field,
                "reason": reasons[0] if reasons else "",
                "fieldErrors": {k: list(v) for k, v in field_errors.items()},
            }
            if job_id:
                entry["jobId"] = job_id
            self.bad_lines.append(entry)

    def to_document(self) -> dict[str, Any]:
        return {
            "source": {
                "bucket": self.bucket,
                "key": self.key,
                "etag": self.etag,
                "versionId": self.version_id,
            },
            "status": self.status,
            "jobIdPrefix": self.job_id_prefix,
            "lines": self.lines,
            "blankLines": self.blank_lines,
            "enqueued": self.enqueued,
            "badLineCount": self.bad_line_count,
            "badLines": self.bad_lines,
            "badLinesTruncated": self.bad_line_count > len(self.bad_lines),
            "nextLine": self.next_line,
            "nextByte": self.next_byte,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
        }

    @classmethod
    def resume(cls, document: Any, fresh: BatchReport) -> BatchReport:
        """The saved report when it is for the same object version, else ``fresh``."""
        if not isinstance(document, dict):
            return fresh
        source = document.get("source") or {}
        same = source.get("etag") == fresh.etag and source.get("versionId") == fresh.version_id
        if not same or document.get("status") not in ("IN_PROGRESS", "COMPLETE"):
            return fresh
        fresh.status = str(document["status"])
        fresh.next_line = int(document.get("nextLine") or 1)
        fresh.next_byte = int(document.get("nextByte") or 0)
        fresh.lines = int(document.get("lines") or 0)
        fresh.blank_lines = int(document.get("blankLines") or 0)
        fresh.enqueued = int(document.get("enqueued") or 0)
        fresh.bad_line_count = int(document.get("badLineCount") or 0)
        fresh.bad_lines = list(document.get("badLines") or [])
        fresh.started_at = str(document.get("startedAt") or "")
        return fresh


def _save_report(s3: S3Client, report: BatchReport, now: Callable[[], float]) -> None:
    report.updated_at = iso(now())
    s3.put_object(
        Bucket=report.bucket,
        Key=report.report_key,
        Body=json.dumps(report.to_document(), ensure_ascii=False, indent=1).encode("utf-8"),
        ContentType="application/json",
    )


@dataclass(frozen=True)
class BatchWebhook:
    """The batch object's own webhookUrl (its metadata), checked once for all its lines."""

    url: str | None = None
    problem: str | None = None

    @classmethod
    def of(cls, head: Mapping[str, Any], settings: S3IntakeSettings, resolver: urls.Resolver) -> BatchWebhook:
        url = user_metadata(head).get(BATCH_WEBHOOK_METADATA)
        if url is None:
            return cls()
        return cls(url, urls.check_public_https_url(url, settings.url_allow_hosts, resolver))

    def apply(self, request: jobs.JobRequest) -> jobs.JobRequest:
        """The request with the batch's webhookUrl, unless it names its own."""
        if self.url is None or request.webhook_url is not None:
            return request
        if self.problem is not None:
            reason = f"(the batch's x-amz-meta-{BATCH_WEBHOOK_METADATA}) {self.problem}"
            raise jobs.JobValidationError({"webhookUrl": [reason]}, request.job_id)
        return dataclasses.replace(request, webhook_url=self.url)


def _batch_line_request(request: jobs.JobRequest, line: BatchLine, webhook: BatchWebhook) -> jobs.JobRequest:
    """The line's request, placed in its batch, with the batch's webhook; a line may not name a
    batch itself."""
    given = [
        name for name, value in (("batchId", request.batch_id), ("batchLine", request.batch_line)) if value
    ]
    if given:
        reason = "is set by the batch upload (its object and the line number); remove it from the line"
        raise jobs.JobValidationError({name: [reason] for name in given}, request.job_id)
    return webhook.apply(dataclasses.replace(request, batch_id=line.batch_id, batch_line=line.line))


def _record_bad_line(
    store: JobStore,
    line: BatchLine,
    named_id: str | None,
    field_errors: Mapping[str, list[str]],
    partial: Mapping[str, Any] | None,
    at: float,
) -> str:
    """A REJECTED record for a bad line, under the job id it names when that id is free (so that
    ``imagejobs status <its id>`` finds it), else under the line's own id; the id used."""
    summary = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in field_errors.items())
    message = f"batch line {line.line} is not a valid job: {summary}"[:1000]
    candidates = [named_id] if named_id and named_id != line.default_job_id else []
    for job_id in [*candidates, line.default_job_id]:
        result = store.put_rejected(
            job_id, field_errors, request=partial, message=message, batch=line, now=at
        )
        if result.applied or BatchLine.of(result.record or {}) == line:
            return job_id
    return line.default_job_id  # taken by a job of another origin: the report still names the line


def _send_batch(
    sqs: SQSClient, queue_url: str, entries: list[tuple[int, str]], sleep: Callable[[float], None]
) -> None:
    pending = {str(line): body for line, body in entries}
    for attempt in range(SEND_ATTEMPTS):
        response = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": i, "MessageBody": b} for i, b in pending.items()]
        )
        failed = response.get("Failed") or []
        if not failed:
            return
        pending = {f["Id"]: pending[f["Id"]] for f in failed if f["Id"] in pending}
        if any(f.get("SenderFault") for f in failed):
            raise BatchEnqueueError(f"SQS refused lines {sorted(pending)}: {failed[0].get('Message')}")
        sleep(0.2 * 2**attempt)
    raise BatchEnqueueError(f"SendMessageBatch kept failing for lines {sorted(pending, key=int)}")


def process_batch(
    ref: S3ObjectRef,
    uploads: UploadContext,
    *,
    time_left: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    resolver: urls.Resolver | None = None,
    chunk_bytes: int = 64 * 1024,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),
) -> UploadOutcome:
    """Stream the JSONL batch: validate each line like the intake, enqueue good ones, report bad ones."""
    opened = _open_batch(ref, uploads)
    if isinstance(opened, UploadOutcome):
        return opened
    head, report = opened
    cached_resolver = resolver or functools.lru_cache(maxsize=1024)(socket.getaddrinfo)
    run = _BatchRun(
        ref,
        uploads,
        report,
        size=int(head.get("ContentLength") or 0),
        resolver=cached_resolver,
        webhook=BatchWebhook.of(head, uploads.settings, cached_resolver),
        outbox=_Outbox(uploads.sqs, uploads.settings.jobs_queue_url, sleep, report),
        checkpoints=checkpoints,
        time_left=time_left,
    )
    run.open_record()
    return run.read(chunk_bytes)


def _open_batch(
    ref: S3ObjectRef, uploads: UploadContext
) -> tuple[Mapping[str, Any], BatchReport] | UploadOutcome:
    """The batch object's head and its report: a fresh one, or the saved one to resume from. Ends here
    for a batch deleted or superseded since its event, or already processed."""
    s3 = uploads.s3
    head = head_object(s3, ref.bucket, ref.key, ref.version_id)
    if head is None:
        logger.warning("batch deleted before it was processed", extra={"key": ref.key})
        return UploadOutcome("ack", "batch", "the batch object no longer exists", ref.key)
    etag = str(head.get("ETag", "")).strip('"')
    if ref.etag and not ref.version_id and etag != ref.etag.strip('"'):
        return UploadOutcome("ack", "ignored", "superseded by a newer upload", ref.key)
    version_id = version_of(ref.version_id or head.get("VersionId"))
    batch_id = derived_job_id("b", ref.bucket, ref.key, version_id or etag)[:34]
    fresh = BatchReport(ref.bucket, ref.key, etag, version_id, batch_id + "-", started_at=iso(uploads.now()))
    saved, _, _ = read_small_json(s3, ref.bucket, fresh.report_key, 8 * 1024 * 1024)
    report = BatchReport.resume(saved, fresh)
    if report.status == "COMPLETE":
        logger.info("batch already processed; nothing enqueued", extra={"key": ref.key})
        return UploadOutcome("ack", "batch", "already processed", ref.key, report=report.to_document())
    return head, report


@dataclass
class _Outbox:
    """Good lines waiting to go out in one SendMessageBatch (at most 10 entries, 252 KiB)."""

    sqs: SQSClient
    queue_url: str
    sleep: Callable[[float], None]
    report: BatchReport
    entries: list[tuple[int, str]] = field(default_factory=list)
    size: int = 0

    @property
    def empty(self) -> bool:
        return not self.entries

    def add(self, line: int, message: str) -> None:
        size = len(message.encode("utf-8"))
        if self.size + size > SQS_BATCH_BYTES:
            self.flush()
        self.entries.append((line, message))
        self.size += size
        if len(self.entries) == SQS_BATCH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        if self.entries:
            _send_batch(self.sqs, self.queue_url, self.entries, self.sleep)
            self.report.enqueued += len(self.entries)
            self.entries, self.size = [], 0


@dataclass
class _BatchRun:
    """One invocation's reading of a batch: from its report's checkpoint to the end, or until the
    invocation runs short of time (saved there, resumed by the next)."""

    ref: S3ObjectRef
    uploads: UploadContext
    report: BatchReport
    size: int  # the object's bytes
    resolver: urls.Resolver
    webhook: BatchWebhook
    outbox: _Outbox
    checkpoints: CheckpointPolicy
    time_left: Callable[[], float] | None
    seen_ids: set[str] = field(default_factory=set)
    enqueued_before: int = 0
    lines_since_checkpoint: int = 0
    checkpointed_at: float = 0.0
    batches: BatchStore = field(init=False)  # the batch's own record, beside the jobs'

    def __post_init__(self) -> None:
        self.batches = BatchStore(self.uploads.store.table)
        self.enqueued_before = self.report.enqueued
        self.checkpointed_at = self.uploads.now()

    @property
    def batch_id(self) -> str:
        return self.report.job_id_prefix[:-1]

    def open_record(self) -> None:
        """The batch's own record (idempotent), with its webhook when that is valid."""
        report = self.report
        self.batches.open(
            self.batch_id,
            BatchFiles.beside(report.bucket, report.key),
            {"bucket": report.bucket, "key": report.key, "versionId": report.version_id, "etag": report.etag},
            webhook_url=self.webhook.url if self.webhook.problem is None else None,
            now=self.uploads.now(),
        )

    def read(self, chunk_bytes: int) -> UploadOutcome:
        report = self.report
        request: dict[str, Any] = {"Bucket": report.bucket, "Key": report.key, "IfMatch": f'"{report.etag}"'}
        if report.version_id:
            request["VersionId"] = report.version_id
        resume_at = report.next_byte
        first_line = report.next_line if resume_at else 1
        chunks = object_chunks(
            self.uploads.s3, request, size=self.size, chunk_bytes=chunk_bytes, start=resume_at
        )
        with closing(chunks):
            lines = iter_positioned_lines(chunks, MAX_LINE_BYTES, first_line=first_line, offset=resume_at)
            for number, line, length, line_end in lines:
                if number < report.next_line:
                    continue  # a report without nextByte: done before the checkpoint this run resumes from
                report.lines = number
                self.take(BatchLine(self.batch_id, number), line, length)
                if self.checkpoint(number, line_end):
                    return UploadOutcome("resume", "batch", f"out of time at line {number}", self.ref.key)
            self.outbox.flush()
        return self.complete()

    def take(self, place: BatchLine, line: bytes | None, length: int) -> None:
        """One line: a blank, a REJECTED record (too long, or not a valid job), or a message to send."""
        store, now = self.uploads.store, self.uploads.now
        if line is None:
            errors = {"body": [f"line is {length} bytes; the limit is {MAX_LINE_BYTES}"]}
            self.report.add_bad(place.line, errors, _record_bad_line(store, place, None, errors, None, now()))
        elif not line.strip():
            self.report.blank_lines += 1
        else:
            try:
                request = self.line_request(place, line)
            except jobs.JobValidationError as invalid:
                job_id = _record_bad_line(
                    store, place, invalid.job_id, invalid.field_errors, partial_request(line), now()
                )
                self.report.add_bad(place.line, invalid.field_errors, job_id)
            else:
                self.outbox.add(place.line, json.dumps(request.to_message()))
        self.lines_since_checkpoint += 1

    def line_request(self, place: BatchLine, line: bytes) -> jobs.JobRequest:
        """The line as a job of its batch, validated as the intake would, and more: its outputPrefix
        outside the upload trigger's prefix, and no job id used by an earlier line."""
        settings = self.uploads.settings
        request = jobs.parse_job(line, place.default_job_id, settings=settings, resolver=self.resolver)
        request = _batch_line_request(request, place, self.webhook)
        problem = trigger_prefix_problem(request.output_prefix, settings)
        if problem:
            raise jobs.JobValidationError({"outputPrefix": [problem]}, request.job_id)
        if request.job_id != place.default_job_id:
            if request.job_id in self.seen_ids:
                raise jobs.JobValidationError(
                    {"jobId": [f"{request.job_id} is used by an earlier line"]}, None
                )
            self.seen_ids.add(request.job_id)
        return request

    def checkpoint(self, number: int, line_end: int) -> bool:
        """Save the report when due or short of time (only with nothing buffered, so a resume never
        sends a line twice); True: out of time, the retry resumes from here."""
        # Time is checked at every line, not only at checkpoints: a slow read (throttled sends)
        # that never reached a checkpoint would otherwise restart from line 1 at each retry.
        now, policy = self.uploads.now, self.checkpoints
        out_of_time = self.time_left is not None and self.time_left() < policy.min_time_left_seconds
        due = (
            self.lines_since_checkpoint >= policy.every_lines
            or now() - self.checkpointed_at >= policy.every_seconds
        )
        if not self.outbox.empty or not (due or out_of_time):
            return False
        self.report.next_line, self.report.next_byte = number + 1, line_end
        _save_report(self.uploads.s3, self.report, now)
        self.lines_since_checkpoint, self.checkpointed_at = 0, now()
        if out_of_time:
            count(BATCH_LINES_ENQUEUED, self.report.enqueued - self.enqueued_before)
            logger.warning("batch paused for time; the retry resumes", extra={"next_line": number + 1})
        return out_of_time

    def complete(self) -> UploadOutcome:
        report, now = self.report, self.uploads.now
        # Every line that is not blank has its record (a job, or REJECTED): the batch's size.
        self.batches.set_expected(self.batch_id, report.lines - report.blank_lines, now=now())
        report.next_line, report.next_byte = report.lines + 1, self.size
        report.status = "COMPLETE"
        _save_report(self.uploads.s3, report, now)
        count(BATCH_LINES_ENQUEUED, report.enqueued - self.enqueued_before)
        count(BATCH_LINES_BAD, report.bad_line_count)
        logger.info(
            "batch processed",
            extra={
                "key": report.key,
                "lines": report.lines,
                "enqueued": report.enqueued,
                "bad": report.bad_line_count,
            },
        )
        return UploadOutcome("ack", "batch", "processed", report.key, report=report.to_document())
