"""The job message (docs/messages.md): parsing, validation and the provider request body."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imagejobs import catalog, urls

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from imagejobs.config import JobInputSettings

JOB_ID_MAX_LENGTH = 80
JOB_ID_RE = re.compile(rf"^[A-Za-z0-9_-]{{1,{JOB_ID_MAX_LENGTH}}}$")
# A job id names its Step Functions execution (80 characters, no spaces or punctuation).
JOB_ID_RULE = "must match ^[A-Za-z0-9_-]{1,80}$ (1-80 letters, digits, '_' or '-')"


def job_id_problem(job_id: object) -> str | None:
    """Why ``job_id`` cannot be a job id (None: it can); intake and the CLI share this rule."""
    if isinstance(job_id, str) and JOB_ID_RE.match(job_id):
        return None
    return f"{JOB_ID_RULE}, got {job_id!r}"[:200]


MODEL_RE = re.compile(r"^[A-Za-z0-9._/:-]{1,128}$")
OUTPUT_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()/-]+$")
METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_MODEL = "gpt-image-2"

FIELDS = (
    "jobId",
    "prompt",
    "model",
    "aspectRatio",
    "inputImageUrls",
    "inputMode",
    "duration",
    "providerInput",
    "outputPrefix",
    "metadata",
    "batchId",
    "batchLine",
    "retryOf",
    "webhookUrl",
)
# Job-id-shaped references kept on the record: the batch a job belongs to (``imagejobs cancel
# --batch``, ``retry --batch``), and the job a retry re-sends (``<jobId>-r<n>``).
LINK_FIELDS = {"batchId": "batch_id", "retryOf": "retry_of"}
# A batch's line numbers are 1-based; a JSONL batch of more lines than this is not plausible.
MAX_BATCH_LINE = 10_000_000


@dataclass(frozen=True)
class JobLimits:
    max_body_bytes: int = 256 * 1024
    max_depth: int = 32
    max_prompt_chars: int = 100_000  # generic cap for models without a documented one
    max_input_images: int = 16  # generic cap for models the catalog does not know
    max_url_chars: int = 4096
    max_provider_input_bytes: int = 16 * 1024
    max_metadata_bytes: int = 2048
    max_output_prefix_chars: int = 512


class JobValidationError(ValueError):
    """The message is not a valid job; ``field_errors`` names every bad field and why."""

    def __init__(self, field_errors: Mapping[str, list[str]], job_id: str | None = None) -> None:
        self.field_errors = {name: list(reasons) for name, reasons in field_errors.items()}
        self.job_id = job_id
        summary = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in self.field_errors.items())
        super().__init__(f"invalid job: {summary}")


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    kind: str
    model: str
    prompt: str
    aspect_ratio: str | None = None
    input_image_urls: tuple[str, ...] = ()
    input_mode: str | None = None
    duration: int | None = None
    provider_input: Mapping[str, Any] | None = None
    output_prefix: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    batch_id: str | None = None
    # The job's line in its batch (docs/batches.md): the batch's results list lines in this order.
    batch_line: int | None = None
    retry_of: str | None = None
    # Where the job's state changes are POSTed (docs/webhooks.md); checked like input URLs.
    webhook_url: str | None = None

    def to_provider_body(self, input_image_urls: Iterable[str] | None = None) -> dict[str, Any]:
        """The provider request body, fields in a fixed order; ``input_image_urls`` replaces s3:// URIs."""
        body: dict[str, Any] = {"prompt": self.prompt, "model": self.model}
        if self.aspect_ratio is not None:
            body["aspectRatio"] = self.aspect_ratio
        images = list(self.input_image_urls if input_image_urls is None else input_image_urls)
        if images:
            body["inputImageUrls"] = images
        if self.input_mode is not None:
            body["inputMode"] = self.input_mode
        if self.duration is not None:
            body["duration"] = self.duration
        if self.provider_input is not None:
            body["providerInput"] = dict(self.provider_input)
        return body

    def to_record(self) -> dict[str, Any]:
        """The normalised message, as stored in the job record's ``request``."""
        record: dict[str, Any] = {"jobId": self.job_id, "kind": self.kind, **self.to_provider_body()}
        if self.output_prefix is not None:
            record["outputPrefix"] = self.output_prefix
        if self.metadata:
            record["metadata"] = dict(self.metadata)
        for name, attribute in LINK_FIELDS.items():
            if getattr(self, attribute) is not None:
                record[name] = getattr(self, attribute)
        if self.batch_line is not None:
            record["batchLine"] = self.batch_line
        if self.webhook_url is not None:
            record["webhookUrl"] = self.webhook_url
        return record

    @classmethod
    def from_record(cls, request: Mapping[str, Any]) -> JobRequest:
        duration = request.get("duration")
        return cls(
            job_id=str(request["jobId"]),
            kind=str(request.get("kind") or "image"),
            model=str(request.get("model") or DEFAULT_MODEL),
            prompt=str(request.get("prompt") or ""),
            aspect_ratio=request.get("aspectRatio"),
            input_image_urls=tuple(str(u) for u in request.get("inputImageUrls") or ()),
            input_mode=request.get("inputMode"),
            duration=int(duration) if duration is not None else None,
            provider_input=request.get("providerInput"),
            output_prefix=request.get("outputPrefix"),
            metadata={str(k): str(v) for k, v in (request.get("metadata") or {}).items()},
            batch_id=request.get("batchId"),
            batch_line=int(request["batchLine"]) if request.get("batchLine") is not None else None,
            retry_of=request.get("retryOf"),
            webhook_url=request.get("webhookUrl"),
        )


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping once it passes ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, Mapping):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _decode(payload: str | bytes | Mapping[str, Any], limits: JobLimits) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        document: Any = payload
        try:
            size = len(json.dumps(payload, default=str, allow_nan=False).encode("utf-8"))
        except (TypeError, ValueError, RecursionError):
            raise JobValidationError({"body": ["is not serialisable as JSON"]}) from None
    else:
        # surrogatepass: a str holding a lone surrogate fails UTF-8 decoding below instead of crashing here.
        raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
        size = len(raw)
        if size > limits.max_body_bytes:
            raise JobValidationError({"body": [f"is {size} bytes; the limit is {limits.max_body_bytes}"]})
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise JobValidationError({"body": ["is not UTF-8 text"]}) from None
        except RecursionError:
            raise JobValidationError({"body": [f"is nested deeper than {limits.max_depth} levels"]}) from None
        except ValueError as exc:
            raise JobValidationError({"body": [f"is not valid JSON ({exc})"]}) from None
    if size > limits.max_body_bytes:
        raise JobValidationError({"body": [f"is {size} bytes; the limit is {limits.max_body_bytes}"]})
    if not isinstance(document, Mapping):
        raise JobValidationError({"body": [f"must be a JSON object, got {type(document).__name__}"]})
    if _depth(document, limits.max_depth) > limits.max_depth:
        raise JobValidationError({"body": [f"is nested deeper than {limits.max_depth} levels"]})
    try:
        # JSON escapes can spell unpaired surrogates ("\\ud800"): valid JSON, but not storable text.
        json.dumps(document, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        reason = "contains invalid Unicode (an unpaired surrogate such as \\ud800)"
        raise JobValidationError({"body": [reason]}) from None
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_s3_uri(uri: str, input_bucket: str | None) -> str | None:
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if not parts.netloc or not key:
        return "must be s3://<bucket>/<key>"
    if input_bucket is None or parts.netloc != input_bucket:
        return f"s3:// inputs must be in the stack's bucket ({input_bucket or 'none configured'})"
    if ".." in key.split("/") or len(key) > 1024 or parts.query or parts.fragment:
        return "has an invalid object key"
    return None


def parse_job(
    payload: str | bytes | Mapping[str, Any],
    default_job_id: str,
    *,
    settings: JobInputSettings | None = None,
    input_bucket: str | None = None,
    allow_hosts: Iterable[str] | None = None,
    resolver: urls.Resolver = socket.getaddrinfo,
    limits: JobLimits | None = None,
) -> JobRequest:
    """Validate a job message; raise JobValidationError naming every bad field."""
    limits = limits or JobLimits()
    if settings is not None:
        input_bucket = input_bucket or settings.output_bucket
        allow_hosts = settings.url_allow_hosts if allow_hosts is None else allow_hosts
    allow = tuple(allow_hosts or ())
    document = _decode(payload, limits)
    errors: dict[str, list[str]] = {}

    def fail(name: str, reason: str) -> None:
        errors.setdefault(name, []).append(reason)

    for name in document:
        if name not in FIELDS:
            fail(str(name), f"unknown field (allowed: {', '.join(FIELDS)})")

    job_id = document.get("jobId", default_job_id)
    problem = job_id_problem(job_id)
    if problem is not None:
        fail("jobId", problem if "jobId" in document else f"(defaulted to the message id) {problem}")

    links: dict[str, str] = {}
    for name, attribute in LINK_FIELDS.items():
        value = document.get(name)
        if value is None:
            continue
        problem = job_id_problem(value)
        if problem is None:
            links[attribute] = str(value)
        else:
            fail(name, problem)
    batch_line = document.get("batchLine")
    if batch_line is not None:
        if isinstance(batch_line, bool) or not isinstance(batch_line, int):
            fail("batchLine", "must be a whole number (the job's line in its batch, from 1)")
            batch_line = None
        elif not 1 <= batch_line <= MAX_BATCH_LINE:
            fail("batchLine", f"must be between 1 and {MAX_BATCH_LINE}")
            batch_line = None
        elif "batchId" not in document:
            fail("batchLine", "needs batchId (the batch the line belongs to)")

    prompt = document.get("prompt")
    if prompt is None:
        fail("prompt", "is required")
    elif not isinstance(prompt, str):
        fail("prompt", "must be a string")
    elif not prompt.strip():
        fail("prompt", "must not be empty")
    elif len(prompt) > limits.max_prompt_chars:
        fail("prompt", f"is {len(prompt)} characters; the limit is {limits.max_prompt_chars}")

    model = document.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not MODEL_RE.match(model):
        fail("model", "must be a model name such as gpt-image-2")
        model = DEFAULT_MODEL if not isinstance(model, str) else model
    spec = catalog.get_model(model)

    aspect_ratio = document.get("aspectRatio")
    if aspect_ratio is not None and (not isinstance(aspect_ratio, str) or not aspect_ratio.strip()):
        fail("aspectRatio", "must be a non-empty string such as 1:1")

    input_mode = document.get("inputMode")
    if input_mode is not None and not isinstance(input_mode, str):
        fail("inputMode", "must be a string")
    duration = document.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        fail("duration", "must be a number of seconds")
    elif isinstance(duration, float):
        if duration.is_integer():
            duration = int(duration)
        else:
            fail("duration", "must be a whole number of seconds")
    if isinstance(duration, int) and not isinstance(duration, bool) and duration <= 0:
        fail("duration", "must be positive")

    # Unknown models: a video request is recognisable by its video-only fields.
    kind: catalog.Kind
    if spec is not None:
        kind = spec.kind
    else:
        kind = "video" if "inputMode" in document or "duration" in document else "image"

    image_urls = document.get("inputImageUrls")
    checked_urls: list[str] = []
    if image_urls is not None:
        if not isinstance(image_urls, list):
            fail("inputImageUrls", "must be an array of URL strings")
        else:
            if spec is None and len(image_urls) > limits.max_input_images:
                fail(
                    "inputImageUrls", f"has {len(image_urls)} entries; the limit is {limits.max_input_images}"
                )
            for index, url in enumerate(image_urls):
                if not isinstance(url, str):
                    fail("inputImageUrls", f"item {index} must be a string")
                    continue
                if len(url) > limits.max_url_chars:
                    fail("inputImageUrls", f"item {index} is longer than {limits.max_url_chars} characters")
                    continue
                if url.lower().startswith("s3://"):
                    reason = _check_s3_uri(url, input_bucket)
                else:
                    reason = urls.check_public_https_url(url, allow, resolver)
                if reason:
                    fail("inputImageUrls", f"item {index} {reason}")
                else:
                    checked_urls.append(url)

    provider_input = document.get("providerInput")
    if provider_input is not None:
        if not isinstance(provider_input, Mapping):
            fail("providerInput", "must be a JSON object")
        else:
            size = len(json.dumps(provider_input, default=str).encode("utf-8"))
            if size > limits.max_provider_input_bytes:
                fail("providerInput", f"is {size} bytes; the limit is {limits.max_provider_input_bytes}")

    output_prefix = document.get("outputPrefix")
    if output_prefix is not None:
        if not isinstance(output_prefix, str) or not output_prefix:
            fail("outputPrefix", "must be a non-empty string")
        elif output_prefix.startswith("/"):
            fail("outputPrefix", "must be relative (no leading /)")
        elif ".." in output_prefix or "//" in output_prefix:
            fail("outputPrefix", "must not contain '..' or '//'")
        elif len(output_prefix) > limits.max_output_prefix_chars:
            fail("outputPrefix", f"is longer than {limits.max_output_prefix_chars} characters")
        elif not OUTPUT_PREFIX_RE.match(output_prefix):
            fail("outputPrefix", "may only contain letters, digits and !_.*'()/-")
        elif not output_prefix.endswith("/"):
            output_prefix += "/"

    metadata = document.get("metadata")
    clean_metadata: dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            fail("metadata", "must be an object of string to string")
        else:
            total = 0
            for key, value in metadata.items():
                if not isinstance(value, str):
                    fail("metadata", f"value of {key!r} must be a string")
                    continue
                if not METADATA_KEY_RE.match(str(key)):
                    fail("metadata", f"key {key!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
                    continue
                total += len(str(key).encode("utf-8")) + len(value.encode("utf-8"))
                clean_metadata[str(key)] = value
            if len({k.lower() for k in clean_metadata}) != len(clean_metadata):
                fail("metadata", "keys must be unique ignoring case (S3 lower-cases them)")
            if total > limits.max_metadata_bytes:
                fail("metadata", f"is {total} bytes; the limit is {limits.max_metadata_bytes}")

    webhook_url = document.get("webhookUrl")
    if webhook_url is not None:
        if not isinstance(webhook_url, str):
            fail("webhookUrl", "must be a URL string")
        elif reason := urls.check_public_https_url(webhook_url, allow, resolver):
            fail("webhookUrl", reason)

    if not errors:
        request = JobRequest(
            job_id=str(job_id),
            kind=kind,
            model=str(model),
            prompt=str(prompt),
            aspect_ratio=aspect_ratio,
            input_image_urls=tuple(checked_urls),
            input_mode=input_mode,
            duration=duration if isinstance(duration, int) else None,
            provider_input=dict(provider_input) if isinstance(provider_input, Mapping) else None,
            output_prefix=output_prefix,
            metadata=clean_metadata,
            **links,
            batch_line=batch_line,
            webhook_url=webhook_url,
        )
        for name, reasons in catalog.validate_generation_request(request.to_provider_body(), kind).items():
            for reason in reasons:
                fail(name, reason)
        if not errors:
            return request
    raise JobValidationError(errors, job_id if isinstance(job_id, str) and JOB_ID_RE.match(job_id) else None)


def resolve_input_urls(request: JobRequest, presign: Callable[[str, str], str]) -> list[str]:
    """Input URLs for the provider: ``s3://bucket/key`` becomes ``presign(bucket, key)``."""
    resolved: list[str] = []
    for url in request.input_image_urls:
        if url.lower().startswith("s3://"):
            parts = urlsplit(url)
            resolved.append(presign(parts.netloc, parts.path.lstrip("/")))
        else:
            resolved.append(url)
    return resolved


def s3_presigner(s3: S3Client, ttl_seconds: int) -> Callable[[str, str], str]:
    def presign(bucket: str, key: str) -> str:
        return str(
            s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_seconds
            )
        )

    return presign
