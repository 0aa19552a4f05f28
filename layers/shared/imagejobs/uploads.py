"""S3 upload triggers (docs/uploads.md): photos become image-to-image jobs, JSONL files become batches.

S3 ObjectCreated events reach S3IntakeFunction through the uploads queue. Every job
made here is sent to the jobs queue, so it goes through the one intake path (with its
idempotency); only uploads that cannot become a job at all are recorded here, as
REJECTED, with the reason per field.

- ``<inputs>/…/photo.png``: an image (magic bytes, size cap). Prompt and options come
  from, lowest precedence first, a recipe (``<recipes>/<name>.json``, chosen by the
  first sub-prefix or ``x-amz-meta-recipe``), a sidecar ``photo.png.json`` and the
  object's metadata (``x-amz-meta-prompt``, ``-model``, ``-aspect-ratio``, ``-output-prefix``).
- ``<inputs>/…/photo.png.json``: a sidecar; when its image already exists, it (re)builds that job.
- ``<batches>/…/file.jsonl``: one job per line, streamed; a report lands at ``file.jsonl.report.json``.
  The object's ``x-amz-meta-webhook-url`` is the webhookUrl of every line that names none.

Job ids are derived from the object (bucket, key, version or ETag) so a redelivered event
enqueues nothing new: the intake ignores a job id it has seen, and a batch whose report says
COMPLETE for this version is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import socket
import string
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from email.header import decode_header
from typing import Any, Literal

from aws_lambda_powertools.utilities.data_classes import S3Event
from botocore.exceptions import ClientError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
from urllib3.exceptions import HTTPError as Urllib3Error

from imagejobs import jobs, urls
from imagejobs.batches import RESULTS_SUFFIX, SUMMARY_SUFFIX, BatchFiles, BatchStore
from imagejobs.config import S3IntakeSettings, TriggerPrefixSettings
from imagejobs.copier import sniff
from imagejobs.intake import partial_request
from imagejobs.jsonl import iter_capped_lines
from imagejobs.observability import count, logger
from imagejobs.store import BatchLine, JobStore, iso

SIDECAR_SUFFIX = ".json"
BATCH_SUFFIX = ".jsonl"
REPORT_SUFFIX = ".report.json"
MAGIC_BYTES = 64
MAX_SIDECAR_BYTES = 64 * 1024
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


# A dropped body stream (S3 closes a connection its client stops reading from, while sends are
# throttled) is reopened at the byte reached, this many times per invocation, before it fails.
STREAM_REOPENS = 5
STREAM_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, Urllib3Error, ConnectionError)
# When an S3 event whose processing raised (an AWS error, an unreadable body) is offered again, by
# its receive count: sooner than the queue's 90-minute visibility timeout, later each time; the
# queue's maxReceiveCount (5) then moves it to the dead-letter queue, about 40 minutes after the first.
FAILED_EVENT_RETRY_SECONDS = (30.0, 120.0, 600.0, 1800.0)
SEND_ATTEMPTS = 4
# Written by the copier on every output; an object carrying it was made by the pipeline.
OUTPUT_MARKER_METADATA = "job-id"
# Metadata keys that set job options rather than travel as job metadata.
OPTION_METADATA = {
    "prompt": "prompt",
    "model": "model",
    "aspect-ratio": "aspectRatio",
    "output-prefix": "outputPrefix",
    "webhook-url": "webhookUrl",
}
# A batch object's x-amz-meta-webhook-url: the webhookUrl of every line that names none.
BATCH_WEBHOOK_METADATA = "webhook-url"
RECIPE_METADATA = "recipe"
RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RECIPE_FIELDS = ("prompt", "model", "aspectRatio", "providerInput", "outputPrefix", "metadata")
SIDECAR_FIELDS = (*RECIPE_FIELDS, "jobId", "recipe", "inputImageUrls", "inputMode", "duration", "webhookUrl")

Kind = Literal["image", "sidecar", "batch", "unsupported", "ignored"]
UPLOADS_REJECTED = "UploadsRejected"
UPLOADS_ENQUEUED = "UploadJobsEnqueued"
BATCH_LINES_ENQUEUED = "BatchJobsEnqueued"
BATCH_LINES_BAD = "BatchLinesRejected"
RECURSION_GUARD = "UploadRecursionPrevented"


class UploadEventError(ValueError):
    """The uploads-queue message is not an S3 event notification."""


class BatchEnqueueError(RuntimeError):
    """SendMessageBatch kept failing for some entries; the S3 event is retried (resuming the batch)."""


@dataclass(frozen=True)
class S3ObjectRef:
    bucket: str
    key: str  # decoded (unquote_plus): moto encodes "/" as %2F, AWS encodes spaces as "+"
    etag: str | None = None
    version_id: str | None = None

    @property
    def identity(self) -> str:
        """What distinguishes this upload from another at the same key."""
        return self.version_id or (self.etag or "").strip('"')

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class UploadOutcome:
    # "resume": a batch paused for time; its event is to be sent again, to resume at the checkpoint.
    action: Literal["ack", "resume"]
    kind: Kind
    reason: str
    key: str
    job_id: str | None = None
    report: Mapping[str, Any] | None = None

    @property
    def ack(self) -> bool:
        return self.action == "ack"


# ----------------------------------------------------------------------------- events


def parse_upload_message(body: str | bytes) -> list[S3ObjectRef]:
    """The ObjectCreated objects of one uploads-queue message; [] for ``s3:TestEvent`` and other events."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise UploadEventError(f"body is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UploadEventError("body is not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(document.get("Records"), list):
        raise UploadEventError("body has no Records (not an S3 event notification)")
    refs = []
    for record in S3Event(document).records:
        if not record.event_name.startswith("ObjectCreated:"):
            logger.info("ignoring S3 event", extra={"event_name": record.event_name})
            continue
        obj = record.s3.get_object
        refs.append(
            S3ObjectRef(
                bucket=record.s3.bucket.name,
                key=_decode_key(obj.key),
                etag=obj.etag or None,
                version_id=version_of(obj.version_id),
            )
        )
    return refs


def _decode_key(raw: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(raw)


def version_of(value: Any) -> str | None:
    """A real version id, or None (unversioned buckets report none, or the literal "null")."""
    return str(value) if value and value != "null" else None


def classify(key: str, settings: TriggerPrefixSettings) -> tuple[Kind, str]:
    if key.startswith(settings.batches_prefix):
        if key.endswith(REPORT_SUFFIX):
            return "ignored", "a batch report this function wrote"
        if key.endswith((RESULTS_SUFFIX, SUMMARY_SUFFIX)):
            return "ignored", f"a batch's results (*{RESULTS_SUFFIX}, *{SUMMARY_SUFFIX} are reserved names)"
        if key.lower().endswith(BATCH_SUFFIX):
            return "batch", "JSONL batch"
        if key.endswith("/"):
            return "ignored", "folder placeholder"
        # A visible trace, not silence: the user meant a batch and gets a REJECTED record saying why.
        expected = f"batches are JSON Lines files named *{BATCH_SUFFIX}"
        return "unsupported", f"is not a {BATCH_SUFFIX} file ({expected})"
    if key.startswith(settings.inputs_prefix):
        if key.endswith("/"):
            return "ignored", "folder placeholder"
        if key.lower().endswith(SIDECAR_SUFFIX):
            return "sidecar", "sidecar JSON"
        return "image", "image upload"
    return "ignored", f"outside {settings.inputs_prefix} and {settings.batches_prefix}"


def trigger_prefix_problem(prefix: str | None, settings: TriggerPrefixSettings) -> str | None:
    """Why outputs under ``prefix`` would start new work (recursion), or None."""
    if not prefix:
        return None
    for trigger in (settings.inputs_prefix, settings.batches_prefix):
        if prefix.startswith(trigger) or trigger.startswith(prefix):
            return f"must not overlap {trigger} (outputs there would start new jobs)"
    return None


def derived_job_id(tag: str, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{tag}-{digest[:32]}"


# ----------------------------------------------------------------------------- S3 helpers


def _is_missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


def head_object(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return dict(s3.head_object(**kwargs))
    except ClientError as error:
        if _is_missing(error):
            return None
        raise


def _read_small_json(s3: Any, bucket: str, key: str, limit: int) -> tuple[Any, str | None, str | None]:
    """(document, etag, problem): document None and problem None when the object does not exist."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _is_missing(error):
            return None, None, None
        raise
    with response["Body"] as body:
        raw = body.read(limit + 1)
    etag = str(response.get("ETag", "")).strip('"')
    if len(raw) > limit:
        return None, etag, f"is larger than {limit} bytes"
    try:
        return json.loads(raw.decode("utf-8")), etag, None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, etag, f"is not UTF-8 JSON ({exc})"


def user_metadata(head: Mapping[str, Any]) -> dict[str, str]:
    """A HeadObject's x-amz-meta-* values by lower-case name, decoded."""
    return {str(k).lower(): decode_metadata_value(str(v)) for k, v in (head.get("Metadata") or {}).items()}


def decode_metadata_value(value: str) -> str:
    """S3 returns non-ASCII user metadata RFC 2047-encoded (=?UTF-8?B?...?=): decode it."""
    if "=?" not in value:
        return value
    try:
        parts = decode_header(value)
    except Exception:
        return value
    return "".join(
        text.decode(charset or "utf-8", errors="replace") if isinstance(text, bytes) else text
        for text, charset in parts
    )


# ----------------------------------------------------------------------------- images


@dataclass
class _Resolved:
    message: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, []).append(reason)


def _recipe_name(
    ref: S3ObjectRef,
    metadata: Mapping[str, str],
    sidecar: Mapping[str, Any] | None,
    settings: TriggerPrefixSettings,
) -> tuple[str | None, bool]:
    """(recipe name, explicitly named): metadata beats sidecar beats the first sub-prefix."""
    if metadata.get(RECIPE_METADATA):
        return metadata[RECIPE_METADATA], True
    if sidecar and isinstance(sidecar.get("recipe"), str):
        return str(sidecar["recipe"]), True
    rest = ref.key[len(settings.inputs_prefix) :]
    if "/" in rest:
        candidate = rest.split("/", 1)[0]
        if RECIPE_NAME_RE.match(candidate):
            return candidate, False
    return None, False


def resolve_image_job(
    ref: S3ObjectRef, metadata: Mapping[str, str], *, s3: Any, settings: S3IntakeSettings
) -> _Resolved:
    """The job message for an image upload (recipe < sidecar < object metadata), and what is wrong with it."""
    resolved = _Resolved({})
    message = resolved.message
    sidecar_key = ref.key + SIDECAR_SUFFIX
    sidecar, sidecar_etag, problem = _read_small_json(s3, ref.bucket, sidecar_key, MAX_SIDECAR_BYTES)
    if problem:
        resolved.fail("sidecar", f"{sidecar_key} {problem}")
        sidecar = None
    elif sidecar is not None and not isinstance(sidecar, dict):
        resolved.fail("sidecar", f"{sidecar_key} must be a JSON object")
        sidecar = None
    if sidecar:
        for name in sidecar:
            if name not in SIDECAR_FIELDS:
                resolved.fail(
                    "sidecar", f"{sidecar_key}: unknown field {name!r} (allowed: {', '.join(SIDECAR_FIELDS)})"
                )

    recipe_name, explicit = _recipe_name(ref, metadata, sidecar, settings)
    recipe: dict[str, Any] | None = None
    recipe_missing = False
    if recipe_name is not None:
        recipe_key = f"{settings.recipes_prefix}{recipe_name}.json"
        if not RECIPE_NAME_RE.match(recipe_name):
            resolved.fail("recipe", f"{recipe_name!r} is not a recipe name ({RECIPE_NAME_RE.pattern})")
        else:
            document, _, problem = _read_small_json(s3, ref.bucket, recipe_key, MAX_SIDECAR_BYTES)
            if problem:
                resolved.fail("recipe", f"{recipe_key} {problem}")
            elif document is None:
                recipe_missing = True
                if explicit:
                    resolved.fail("recipe", f"{recipe_key} does not exist")
            elif not isinstance(document, dict):
                resolved.fail("recipe", f"{recipe_key} must be a JSON object")
            else:
                unknown = [n for n in document if n not in RECIPE_FIELDS]
                if unknown:
                    resolved.fail(
                        "recipe",
                        f"{recipe_key}: unknown fields {unknown} (allowed: {', '.join(RECIPE_FIELDS)})",
                    )
                recipe = {k: v for k, v in document.items() if k in RECIPE_FIELDS}

    job_metadata: dict[str, str] = {}
    prompt_from_recipe = False
    for layer in (recipe, sidecar):
        if not layer:
            continue
        for name in SIDECAR_FIELDS:
            if name in layer and name not in ("recipe", "metadata"):
                message[name] = layer[name]
        if isinstance(layer.get("metadata"), dict):
            job_metadata.update(layer["metadata"])
        elif "metadata" in layer:
            resolved.fail("metadata", "recipe/sidecar metadata must be an object of string to string")
        if "prompt" in layer:
            prompt_from_recipe = layer is recipe
    for name, value in metadata.items():
        if name in OPTION_METADATA:
            message[OPTION_METADATA[name]] = value
            prompt_from_recipe = prompt_from_recipe and name != "prompt"
        elif name not in (RECIPE_METADATA, OUTPUT_MARKER_METADATA):
            job_metadata[name] = value
    if job_metadata:
        message["metadata"] = job_metadata

    if prompt_from_recipe and isinstance(message.get("prompt"), str):
        variables = {
            "key": ref.key,
            "filename": ref.key.rsplit("/", 1)[-1],
            "stem": ref.key.rsplit("/", 1)[-1].rsplit(".", 1)[0],
            **{str(k).replace("-", "_"): str(v) for k, v in job_metadata.items()},
        }
        try:
            message["prompt"] = string.Template(message["prompt"]).substitute(variables)
        except KeyError as missing:
            name = str(missing.args[0])
            resolved.fail(
                "recipe", f"prompt template needs ${{{name}}}: set x-amz-meta-{name.replace('_', '-')}"
            )
        except ValueError as exc:
            resolved.fail("recipe", f"prompt template is invalid ({exc})")

    extra_inputs = message.get("inputImageUrls")
    message["inputImageUrls"] = [ref.uri, *(extra_inputs if isinstance(extra_inputs, list) else [])]
    if not isinstance(message.get("prompt"), str) or not message["prompt"].strip():
        hint = (
            f"no usable prompt: set x-amz-meta-prompt, upload {ref.key}{SIDECAR_SUFFIX} (a sidecar uploaded "
            f"later starts the job), or upload under {settings.inputs_prefix}<recipe>/"
        )
        if recipe_missing:
            hint += f" (no recipe {settings.recipes_prefix}{recipe_name}.json)"
        resolved.fail("prompt", hint)
    if any(ch in ref.key for ch in "?#") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in ref.key):
        resolved.fail("key", "object keys with ?, # or control characters cannot be job inputs; rename it")
    prefix_problem = trigger_prefix_problem(message.get("outputPrefix"), settings)
    if prefix_problem and isinstance(message.get("outputPrefix"), str):
        resolved.fail("outputPrefix", prefix_problem)
    if "jobId" not in message:
        message["jobId"] = derived_job_id("up", ref.bucket, ref.key, ref.identity, sidecar_etag, message)
    return resolved


def _partial(message: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name in ("jobId", "prompt", "model", "aspectRatio"):
        if isinstance(message.get(name), str):
            kept[name] = message[name][:2000]
    urls = message.get("inputImageUrls")
    if isinstance(urls, list):
        kept["inputImageUrls"] = [u for u in urls if isinstance(u, str)][:16]
    return kept


def _reject(
    store: JobStore,
    ref: S3ObjectRef,
    job_id: str,
    errors: Mapping[str, list[str]],
    message: Mapping[str, Any],
    now: Callable[[], float],
    kind: Kind = "image",
) -> UploadOutcome:
    summary = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in errors.items())
    result = store.put_rejected(
        job_id,
        errors,
        request=_partial(message) or {"inputImageUrls": [ref.uri]},
        message=f"upload {ref.uri} cannot become a job: {summary}"[:1000],
        upload={"bucket": ref.bucket, "key": ref.key, "uri": ref.uri},
        now=now(),
    )
    if result.applied:
        count(UPLOADS_REJECTED)
    logger.warning(
        "upload rejected",
        extra={"key": ref.key, "job_id": job_id, "field_errors": errors, "new": result.applied},
    )
    return UploadOutcome("ack", kind, f"rejected: {summary}", ref.key, job_id)


def handle_image_upload(
    ref: S3ObjectRef,
    *,
    s3: Any,
    sqs: Any,
    store: JobStore,
    settings: S3IntakeSettings,
    now: Callable[[], float] = time.time,
) -> UploadOutcome:
    """Validate the upload (exists, not ours, size, magic bytes), resolve its options, enqueue the job."""
    head = head_object(s3, ref.bucket, ref.key, ref.version_id)
    if head is None:
        job_id = derived_job_id("up", ref.bucket, ref.key, ref.identity, "missing")
        errors = {"upload": ["the object no longer exists (deleted before it was processed)"]}
        return _reject(store, ref, job_id, errors, {"inputImageUrls": [ref.uri]}, now)
    current_etag = str(head.get("ETag", "")).strip('"')
    if ref.etag and not ref.version_id and current_etag != ref.etag.strip('"'):
        logger.info(
            "upload superseded by a newer one; that one's event makes the job", extra={"key": ref.key}
        )
        return UploadOutcome("ack", "ignored", "superseded by a newer upload", ref.key)
    ref = S3ObjectRef(
        ref.bucket,
        ref.key,
        current_etag,
        version_of(ref.version_id or head.get("VersionId")),
    )
    metadata = user_metadata(head)
    if OUTPUT_MARKER_METADATA in metadata:
        # Recursion guard: the copier marks every output it writes with x-amz-meta-job-id.
        count(RECURSION_GUARD)
        logger.warning(
            "object was written by the pipeline (x-amz-meta-job-id); not a new job", extra={"key": ref.key}
        )
        return UploadOutcome(
            "ack", "ignored", "pipeline output (x-amz-meta-job-id): recursion guard", ref.key
        )

    size = int(head.get("ContentLength") or 0)
    fallback_id = derived_job_id("up", ref.bucket, ref.key, ref.identity, "unusable")
    if size == 0:
        return _reject(
            store, ref, fallback_id, {"upload": ["is empty (0 bytes)"]}, {"inputImageUrls": [ref.uri]}, now
        )
    if size > settings.max_upload_bytes:
        errors = {"upload": [f"is {size} bytes; the limit is {settings.max_upload_bytes}"]}
        return _reject(store, ref, fallback_id, errors, {"inputImageUrls": [ref.uri]}, now)
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key, "Range": f"bytes=0-{MAGIC_BYTES - 1}"}
    if ref.version_id:
        kwargs["VersionId"] = ref.version_id
    with s3.get_object(**kwargs)["Body"] as body:
        head_bytes = body.read(MAGIC_BYTES)
    sniffed = sniff(head_bytes)
    if sniffed is None or not sniffed[0].startswith("image/"):
        what = sniffed[0] if sniffed else "unrecognised bytes"
        errors = {"upload": [f"is not an image ({what}; expected PNG, JPEG, WebP or GIF)"]}
        return _reject(store, ref, fallback_id, errors, {"inputImageUrls": [ref.uri]}, now)

    resolved = resolve_image_job(ref, metadata, s3=s3, settings=settings)
    message = resolved.message
    job_id = str(message.get("jobId"))
    if not resolved.errors:
        try:
            jobs.parse_job(message, job_id, settings=settings)
        except jobs.JobValidationError as invalid:
            resolved.errors.update(invalid.field_errors)
    if resolved.errors:
        if not jobs.JOB_ID_RE.match(job_id):
            job_id = fallback_id
        return _reject(store, ref, job_id, resolved.errors, message, now)
    sqs.send_message(QueueUrl=settings.jobs_queue_url, MessageBody=json.dumps(message))
    count(UPLOADS_ENQUEUED)
    logger.info("upload enqueued as a job", extra={"key": ref.key, "job_id": job_id})
    return UploadOutcome("ack", "image", "enqueued", ref.key, job_id)


def handle_sidecar_upload(
    ref: S3ObjectRef,
    *,
    s3: Any,
    sqs: Any,
    store: JobStore,
    settings: S3IntakeSettings,
    now: Callable[[], float] = time.time,
) -> UploadOutcome:
    """A sidecar uploaded after its image starts the image's job; one uploaded first waits for it."""
    image_key = ref.key[: -len(SIDECAR_SUFFIX)]
    image = head_object(s3, ref.bucket, image_key)
    if image is None or classify(image_key, settings)[0] != "image":
        logger.info("sidecar stored; its image's upload will use it", extra={"key": ref.key})
        return UploadOutcome("ack", "sidecar", f"waiting for {image_key}", ref.key)
    image_ref = S3ObjectRef(
        ref.bucket, image_key, str(image.get("ETag", "")).strip('"'), version_of(image.get("VersionId"))
    )
    outcome = handle_image_upload(image_ref, s3=s3, sqs=sqs, store=store, settings=settings, now=now)
    return UploadOutcome(outcome.action, "sidecar", outcome.reason, ref.key, outcome.job_id)


# ----------------------------------------------------------------------------- batches


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
        fresh.lines = int(document.get("lines") or 0)
        fresh.blank_lines = int(document.get("blankLines") or 0)
        fresh.enqueued = int(document.get("enqueued") or 0)
        fresh.bad_line_count = int(document.get("badLineCount") or 0)
        fresh.bad_lines = list(document.get("badLines") or [])
        fresh.started_at = str(document.get("startedAt") or "")
        return fresh


def _save_report(s3: Any, report: BatchReport, now: Callable[[], float]) -> None:
    report.updated_at = iso(now())
    s3.put_object(
        Bucket=report.bucket,
        Key=report.report_key,
        Body=json.dumps(report.to_document(), ensure_ascii=False, indent=1).encode("utf-8"),
        ContentType="application/json",
    )


def job_message(request: jobs.JobRequest) -> dict[str, Any]:
    """The normalised job message for a validated request (what the intake parses again): the
    record's request less ``kind``, which the intake derives from the model."""
    return {name: value for name, value in request.to_record().items() if name != "kind"}


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
    sqs: Any, queue_url: str, entries: list[tuple[int, str]], sleep: Callable[[float], None]
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


def object_chunks(
    s3: Any, get_kwargs: Mapping[str, Any], *, size: int, chunk_bytes: int, reopens: int = STREAM_REOPENS
) -> Generator[bytes, None, None]:
    """The object's bytes, in chunks. A body that breaks off is asked for again from the byte it
    reached (a ranged GET of the same version or ETag), so a slow reader never starts over."""
    offset = 0
    reopened = 0
    while True:
        kwargs = dict(get_kwargs, Range=f"bytes={offset}-") if offset else dict(get_kwargs)
        body = s3.get_object(**kwargs)["Body"]
        try:
            with body:
                for chunk in body.iter_chunks(chunk_bytes):
                    offset += len(chunk)
                    yield chunk
            return
        except STREAM_ERRORS as broken:
            if reopened >= reopens or offset >= size:
                raise
            reopened += 1
            logger.warning(
                "object stream broke off; reading on from where it stopped",
                extra={"key": get_kwargs.get("Key"), "offset": offset, "error": type(broken).__name__},
            )


def process_batch(
    ref: S3ObjectRef,
    *,
    s3: Any,
    sqs: Any,
    settings: S3IntakeSettings,
    time_left: Callable[[], float] | None = None,
    now: Callable[[], float] = time.time,
    store: JobStore,
    batches: BatchStore,
    sleep: Callable[[float], None] = time.sleep,
    resolver: Any = None,
    chunk_bytes: int = 64 * 1024,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),
) -> UploadOutcome:
    """Stream the JSONL batch: validate each line like the intake, enqueue good ones, report bad ones."""
    head = head_object(s3, ref.bucket, ref.key, ref.version_id)
    if head is None:
        logger.warning("batch deleted before it was processed", extra={"key": ref.key})
        return UploadOutcome("ack", "batch", "the batch object no longer exists", ref.key)
    etag = str(head.get("ETag", "")).strip('"')
    if ref.etag and not ref.version_id and etag != ref.etag.strip('"'):
        return UploadOutcome("ack", "ignored", "superseded by a newer upload", ref.key)
    version_id = version_of(ref.version_id or head.get("VersionId"))
    batch_id = derived_job_id("b", ref.bucket, ref.key, version_id or etag)[:34]
    fresh = BatchReport(ref.bucket, ref.key, etag, version_id, batch_id + "-", started_at=iso(now()))
    saved, _, _ = _read_small_json(s3, ref.bucket, fresh.report_key, 8 * 1024 * 1024)
    report = BatchReport.resume(saved, fresh)
    if report.status == "COMPLETE":
        logger.info("batch already processed; nothing enqueued", extra={"key": ref.key})
        return UploadOutcome("ack", "batch", "already processed", ref.key, report=report.to_document())

    cached_resolver = resolver or functools.lru_cache(maxsize=1024)(socket.getaddrinfo)
    webhook = BatchWebhook.of(head, settings, cached_resolver)
    batches.open(
        batch_id,
        BatchFiles.beside(ref.bucket, ref.key),
        {"bucket": ref.bucket, "key": ref.key, "versionId": version_id, "etag": etag},
        webhook_url=webhook.url if webhook.problem is None else None,
        now=now(),
    )
    enqueued_before = report.enqueued
    seen_ids: set[str] = set()
    buffer: list[tuple[int, str]] = []
    buffer_bytes = 0
    since_checkpoint = 0
    checkpointed_at = now()

    def flush() -> None:
        nonlocal buffer, buffer_bytes
        if buffer:
            _send_batch(sqs, settings.jobs_queue_url, buffer, sleep)
            report.enqueued += len(buffer)
            buffer, buffer_bytes = [], 0

    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key, "IfMatch": f'"{etag}"'}
    if version_id:
        kwargs["VersionId"] = version_id
    size = int(head.get("ContentLength") or 0)
    with closing(object_chunks(s3, kwargs, size=size, chunk_bytes=chunk_bytes)) as chunks:
        for number, line, length in iter_capped_lines(chunks, MAX_LINE_BYTES):
            if number < report.next_line:
                continue  # done before the checkpoint this run resumes from
            report.lines = number
            place = BatchLine(batch_id, number)
            if line is None:
                errors = {"body": [f"line is {length} bytes; the limit is {MAX_LINE_BYTES}"]}
                report.add_bad(number, errors, _record_bad_line(store, place, None, errors, None, now()))
            elif not line.strip():
                report.blank_lines += 1
            else:
                try:
                    request = jobs.parse_job(
                        line, place.default_job_id, settings=settings, resolver=cached_resolver
                    )
                    request = _batch_line_request(request, place, webhook)
                    problem = trigger_prefix_problem(request.output_prefix, settings)
                    if problem:
                        raise jobs.JobValidationError({"outputPrefix": [problem]}, request.job_id)
                    if request.job_id != place.default_job_id:
                        if request.job_id in seen_ids:
                            raise jobs.JobValidationError(
                                {"jobId": [f"{request.job_id} is used by an earlier line"]}, None
                            )
                        seen_ids.add(request.job_id)
                except jobs.JobValidationError as invalid:
                    job_id = _record_bad_line(
                        store, place, invalid.job_id, invalid.field_errors, partial_request(line), now()
                    )
                    report.add_bad(number, invalid.field_errors, job_id)
                else:
                    message = json.dumps(job_message(request))
                    size = len(message.encode("utf-8"))
                    if len(buffer) == SQS_BATCH_ENTRIES or buffer_bytes + size > SQS_BATCH_BYTES:
                        flush()
                    buffer.append((number, message))
                    buffer_bytes += size
            since_checkpoint += 1
            if len(buffer) == SQS_BATCH_ENTRIES:
                flush()
            # Time is checked at every line, not only at checkpoints: a slow read (throttled sends)
            # that never reached a checkpoint would otherwise restart from line 1 at each retry.
            out_of_time = time_left is not None and time_left() < checkpoints.min_time_left_seconds
            due = (
                since_checkpoint >= checkpoints.every_lines
                or now() - checkpointed_at >= checkpoints.every_seconds
            )
            if not buffer and (due or out_of_time):
                report.next_line = number + 1
                _save_report(s3, report, now)
                since_checkpoint, checkpointed_at = 0, now()
                if out_of_time:
                    count(BATCH_LINES_ENQUEUED, report.enqueued - enqueued_before)
                    logger.warning(
                        "batch paused for time; the retry resumes", extra={"next_line": number + 1}
                    )
                    return UploadOutcome("resume", "batch", f"out of time at line {number}", ref.key)
        flush()
    # Every line that is not blank has its record (a job, or REJECTED): the batch's size.
    batches.set_expected(batch_id, report.lines - report.blank_lines, now=now())
    report.next_line = report.lines + 1
    report.status = "COMPLETE"
    _save_report(s3, report, now)
    count(BATCH_LINES_ENQUEUED, report.enqueued - enqueued_before)
    count(BATCH_LINES_BAD, report.bad_line_count)
    logger.info(
        "batch processed",
        extra={
            "key": ref.key,
            "lines": report.lines,
            "enqueued": report.enqueued,
            "bad": report.bad_line_count,
        },
    )
    return UploadOutcome("ack", "batch", "processed", ref.key, report=report.to_document())


# ----------------------------------------------------------------------------- entry point


def failed_event_retry_seconds(receive_count: int | None) -> float:
    """How long a failed S3 event waits before it is offered again (FAILED_EVENT_RETRY_SECONDS)."""
    attempt = max(1, receive_count or 1)
    return FAILED_EVENT_RETRY_SECONDS[min(attempt, len(FAILED_EVENT_RETRY_SECONDS)) - 1]


def handle_upload_message(
    body: str | bytes,
    *,
    s3: Any,
    sqs: Any,
    store: JobStore,
    settings: S3IntakeSettings,
    time_left: Callable[[], float] | None = None,
    now: Callable[[], float] = time.time,
) -> list[UploadOutcome]:
    """Every object of one uploads-queue message; raises (the message is retried) on AWS errors."""
    outcomes = []
    for ref in parse_upload_message(body):
        kind, why = classify(ref.key, settings)
        if ref.bucket != settings.output_bucket:
            kind, why = "ignored", f"bucket {ref.bucket} is not the stack's bucket"
        if kind == "image":
            outcome = handle_image_upload(ref, s3=s3, sqs=sqs, store=store, settings=settings, now=now)
        elif kind == "sidecar":
            outcome = handle_sidecar_upload(ref, s3=s3, sqs=sqs, store=store, settings=settings, now=now)
        elif kind == "batch":
            outcome = process_batch(
                ref,
                s3=s3,
                sqs=sqs,
                settings=settings,
                time_left=time_left,
                now=now,
                store=store,
                batches=BatchStore(store.table),
            )
        elif kind == "unsupported":
            job_id = derived_job_id("up", ref.bucket, ref.key, ref.identity)
            outcome = _reject(store, ref, job_id, {"key": [f"{ref.key} {why}"]}, {}, now, kind)
        else:
            logger.warning("upload ignored", extra={"key": ref.key, "reason": why})
            outcome = UploadOutcome("ack", "ignored", why, ref.key)
        outcomes.append(outcome)
    return outcomes
