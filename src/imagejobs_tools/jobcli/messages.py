"""Job messages as the CLI builds them: shape checks only.

The pipeline validates every field (prompt caps, models, URLs, ...) and records
REJECTED with field errors; the CLI checks only what it needs to send a message
and print a job id the user can find it by: a JSON object, a valid `jobId`
(generated when absent; the pipeline's own rule), and a body under the SQS size limit.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagejobs.jobs import JOB_ID_MAX_LENGTH, MAX_BATCH_LINE, job_id_problem
from imagejobs.jsonl import iter_capped_lines
from imagejobs.store import BatchLine

# SQS's per-message (and per-SendMessageBatch) payload limit.
SQS_MAX_MESSAGE_BYTES = 262_144
# A line without a jobId gets `<batchId>-<line>`: the batch id leaves room for the longest line number.
MAX_BATCH_ID_LENGTH = JOB_ID_MAX_LENGTH - 1 - len(str(MAX_BATCH_LINE))
BATCH_FIELDS = ("batchId", "batchLine")


class MessageShapeError(ValueError):
    """A message the CLI will not send; the message names the field and the reason."""


@dataclass(frozen=True)
class OutgoingJob:
    """One message ready to send; `source` says where it came from (e.g. `jobs.jsonl:3`)."""

    job_id: str
    body: str
    source: str


@dataclass(frozen=True)
class LineError:
    """A JSONL line that was not sent, with its location (`jobs.jsonl:17`)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex}"


def new_batch_id(content_sha256: str | None, at: float) -> str:
    """`b-` + 16 hex of the file's content hash and the time (stdin, never read twice: a random
    nonce instead), so that submitting the same file again is a new batch."""
    seed = content_sha256 or uuid.uuid4().hex
    return "b-" + hashlib.sha256(f"{seed}/{at!r}".encode()).hexdigest()[:16]


def batch_id_problem(batch_id: str) -> str | None:
    """Why `--batch-id` cannot be used (None: it can): a job id by the pipeline's rule, short enough
    that `<batchId>-<line>` is one too."""
    if (problem := job_id_problem(batch_id)) is not None:
        return f"--batch-id: {problem}"
    if len(batch_id) > MAX_BATCH_ID_LENGTH:
        limit = f"at most {MAX_BATCH_ID_LENGTH} characters (<batchId>-<line> is a job id)"
        return f"--batch-id: {limit}, got {len(batch_id)}"
    return None


def parse_metadata(pairs: Sequence[str]) -> dict[str, str]:
    """`k=v` pairs from `--metadata` into a dict."""
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MessageShapeError(f"metadata: expected key=value, got {pair!r}")
        metadata[key.strip()] = value
    return metadata


def input_problem(value: str) -> str | None:
    """Why `--input VALUE` cannot be sent (None: it can): the pipeline fetches URLs, and a local path
    would reach it as a URL without a host. Say how to use a local file instead."""
    if value.startswith(("https://", "http://", "s3://")):
        return None
    if Path(value).expanduser().is_file():
        name = Path(value).name
        return (
            f"inputImageUrls: {value!r} is a local file; the pipeline fetches URLs. Upload it first "
            f"(aws s3 cp {shlex.quote(value)} s3://BUCKET/uploads/{name}) and pass "
            f"--input s3://BUCKET/uploads/{name}, or upload it under the inputs prefix with a prompt "
            "(docs/uploads.md) to make it a job by itself"
        )
    return f"inputImageUrls: {value!r} is neither an https:// or s3:// URL nor a file"


def build_message(
    prompt: str,
    *,
    model: str | None = None,
    aspect_ratio: str | None = None,
    input_urls: Sequence[str] = (),
    job_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    output_prefix: str | None = None,
    webhook_url: str | None = None,
) -> dict[str, Any]:
    """The message for `submit "PROMPT" ...`, with only the fields the user gave."""
    for value in input_urls:
        if (problem := input_problem(value)) is not None:
            raise MessageShapeError(problem)
    if webhook_url is not None and (problem := webhook_url_problem(webhook_url)) is not None:
        raise MessageShapeError(problem)
    message: dict[str, Any] = {"jobId": job_id or new_job_id(), "prompt": prompt}
    if model:
        message["model"] = model
    if aspect_ratio:
        message["aspectRatio"] = aspect_ratio
    if input_urls:
        message["inputImageUrls"] = list(input_urls)
    if metadata:
        message["metadata"] = dict(metadata)
    if output_prefix:
        message["outputPrefix"] = output_prefix
    if webhook_url:
        message["webhookUrl"] = webhook_url
    return message


def webhook_url_problem(value: str) -> str | None:
    """Why --webhook-url is not even a URL (None: it is; the pipeline checks that it is public)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return f"--webhook-url: {value!r} is not an https:// URL"
    return None


def prepare(
    message: Any, source: str, defaults: Mapping[str, Any] | None = None, batch: BatchLine | None = None
) -> OutgoingJob:
    """Check the shape, fill `jobId` (and any defaults the message lacks), serialise. In a `batch`
    the message gets its `batchId` and `batchLine`, and `<batchId>-<line>` as its default jobId
    (as an S3 batch upload's lines): sending the same batch again sends the same jobs."""
    if not isinstance(message, dict):
        raise MessageShapeError(f"expected a JSON object, got {type(message).__name__}")
    merged = {**(defaults or {}), **message}
    if batch is not None:
        if named := [name for name in BATCH_FIELDS if name in message]:
            raise MessageShapeError(
                f"{named[0]}: is set by submit --file (the batch id and the line number); remove it"
            )
        merged["batchId"], merged["batchLine"] = batch.batch_id, batch.line
    job_id = merged.get("jobId")
    if job_id is None:
        job_id = merged["jobId"] = batch.default_job_id if batch is not None else new_job_id()
    elif (problem := job_id_problem(job_id)) is not None:
        # The pipeline would record the rejection under another id: refuse it here, by the same rule.
        raise MessageShapeError(f"jobId: {problem}")
    body = json.dumps(merged, ensure_ascii=False, separators=(",", ":"))
    size = len(body.encode("utf-8"))
    if size > SQS_MAX_MESSAGE_BYTES:
        raise MessageShapeError(f"message is {size} bytes, over the SQS limit of {SQS_MAX_MESSAGE_BYTES}")
    return OutgoingJob(job_id=job_id, body=body, source=source)


def iter_jsonl(
    chunks: Iterable[bytes],
    name: str,
    defaults: Mapping[str, Any] | None = None,
    batch_id: str | None = None,
) -> Iterator[OutgoingJob | LineError]:
    """Stream a JSONL file's bytes: one `OutgoingJob` or `LineError` per non-blank line, read by the
    same reader as a batch uploaded to S3 (`imagejobs.jsonl`: BOM, line breaks, the line cap). With
    `batch_id`, each job is placed at its line number (blank lines count as lines, as uploads do)."""
    for number, raw, length in iter_capped_lines(chunks, SQS_MAX_MESSAGE_BYTES):
        source = f"{name}:{number}"
        if raw is None:
            yield LineError(source, f"line is {length} bytes, over the SQS limit of {SQS_MAX_MESSAGE_BYTES}")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LineError(source, f"not UTF-8 text: {exc}")
            continue
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:
            yield LineError(source, f"not valid JSON: {exc}")
            continue
        try:
            yield prepare(message, source, defaults, BatchLine(batch_id, number) if batch_id else None)
        except MessageShapeError as exc:
            yield LineError(source, str(exc))
