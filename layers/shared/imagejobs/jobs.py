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

    def to_message(self) -> dict[str, Any]:
        """The job message for this validated request (what the intake parses again): the record's
        request less ``kind``, which the intake derives from the model."""
        return {name: value for name, value in self.to_record().items() if name != "kind"}

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


class _FieldErrors(dict[str, list[str]]):
    """Every reason each field is bad, in the order found."""

    def add(self, name: str, reason: str) -> None:
        self.setdefault(name, []).append(reason)


@dataclass(frozen=True)
class _UrlPolicy:
    """Where input images and webhooks may point: the job's own bucket, public HTTPS hosts."""

    input_bucket: str | None
    allow_hosts: tuple[str, ...]
    resolver: urls.Resolver


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
    policy = _UrlPolicy(input_bucket, tuple(allow_hosts or ()), resolver)
    document = _decode(payload, limits)
    errors = _FieldErrors()
    for name in document:
        if name not in FIELDS:
            errors.add(str(name), f"unknown field (allowed: {', '.join(FIELDS)})")
    job_id = _job_id(document, default_job_id, errors)
    links = _links(document, errors)
    batch_line = _batch_line(document, errors)
    prompt = _prompt(document, limits, errors)
    model = _model(document, errors)
    spec = catalog.get_model(model)
    aspect_ratio = document.get("aspectRatio")
    if aspect_ratio is not None and (not isinstance(aspect_ratio, str) or not aspect_ratio.strip()):
        errors.add("aspectRatio", "must be a non-empty string such as 1:1")
    input_mode, duration = _video_fields(document, errors)
    # Unknown models: a video request is recognisable by its video-only fields.
    kind: catalog.Kind = (
        spec.kind if spec else "video" if {"inputMode", "duration"} & set(document) else "image"
    )
    request = JobRequest(
        job_id=str(job_id),
        kind=kind,
        model=model,
        prompt=str(prompt),
        aspect_ratio=aspect_ratio,
        input_image_urls=_input_images(document, spec, limits, policy, errors),
        input_mode=input_mode,
        duration=duration,
        provider_input=_provider_input(document, limits, errors),
        output_prefix=_output_prefix(document, limits, errors),
        metadata=_metadata(document, limits, errors),
        **links,
        batch_line=batch_line,
        webhook_url=_webhook_url(document, policy, errors),
    )
    if not errors:
        # What the catalogue knows of the model: checked on the body the provider would get.
        catalogue_errors = catalog.validate_generation_request(request.to_provider_body(), kind)
        for name, reasons in catalogue_errors.items():
            for reason in reasons:
                errors.add(name, reason)
    if not errors:
        return request
    raise JobValidationError(errors, job_id if isinstance(job_id, str) and JOB_ID_RE.match(job_id) else None)


def _job_id(document: Mapping[str, Any], default_job_id: str, errors: _FieldErrors) -> Any:
    job_id = document.get("jobId", default_job_id)
    problem = job_id_problem(job_id)
    if problem is not None:
        errors.add("jobId", problem if "jobId" in document else f"(defaulted to the message id) {problem}")
    return job_id


def _links(document: Mapping[str, Any], errors: _FieldErrors) -> dict[str, str]:
    """batchId and retryOf: job ids of the batch, or of the job this one retries."""
    links: dict[str, str] = {}
    for name, attribute in LINK_FIELDS.items():
        value = document.get(name)
        if value is None:
            continue
        problem = job_id_problem(value)
        if problem is None:
            links[attribute] = str(value)
        else:
            errors.add(name, problem)
    return links


def _batch_line(document: Mapping[str, Any], errors: _FieldErrors) -> int | None:
    batch_line = document.get("batchLine")
    if batch_line is None:
        return None
    if isinstance(batch_line, bool) or not isinstance(batch_line, int):
        errors.add("batchLine", "must be a whole number (the job's line in its batch, from 1)")
        return None
    if not 1 <= batch_line <= MAX_BATCH_LINE:
        errors.add("batchLine", f"must be between 1 and {MAX_BATCH_LINE}")
        return None
    if "batchId" not in document:
        errors.add("batchLine", "needs batchId (the batch the line belongs to)")
    return batch_line


def _prompt(document: Mapping[str, Any], limits: JobLimits, errors: _FieldErrors) -> Any:
    prompt = document.get("prompt")
    if prompt is None:
        errors.add("prompt", "is required")
    elif not isinstance(prompt, str):
        errors.add("prompt", "must be a string")
    elif not prompt.strip():
        errors.add("prompt", "must not be empty")
    elif len(prompt) > limits.max_prompt_chars:
        errors.add("prompt", f"is {len(prompt)} characters; the limit is {limits.max_prompt_chars}")
    return prompt


def _model(document: Mapping[str, Any], errors: _FieldErrors) -> str:
    model = document.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not MODEL_RE.match(model):
        errors.add("model", "must be a model name such as gpt-image-2")
        return model if isinstance(model, str) else DEFAULT_MODEL
    return model


def _video_fields(document: Mapping[str, Any], errors: _FieldErrors) -> tuple[str | None, int | None]:
    """inputMode and duration (whole seconds; 5.0 is 5)."""
    input_mode = document.get("inputMode")
    if input_mode is not None and not isinstance(input_mode, str):
        errors.add("inputMode", "must be a string")
    duration = document.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        errors.add("duration", "must be a number of seconds")
    elif isinstance(duration, float):
        if duration.is_integer():
            duration = int(duration)
        else:
            errors.add("duration", "must be a whole number of seconds")
    if isinstance(duration, int) and not isinstance(duration, bool) and duration <= 0:
        errors.add("duration", "must be positive")
    return input_mode, duration if isinstance(duration, int) and not isinstance(duration, bool) else None


def _input_images(
    document: Mapping[str, Any],
    spec: catalog.ModelSpec | None,
    limits: JobLimits,
    policy: _UrlPolicy,
    errors: _FieldErrors,
) -> tuple[str, ...]:
    """The input image URLs that passed: s3:// in the job's bucket, or public HTTPS."""
    image_urls = document.get("inputImageUrls")
    if image_urls is None:
        return ()
    if not isinstance(image_urls, list):
        errors.add("inputImageUrls", "must be an array of URL strings")
        return ()
    if spec is None and len(image_urls) > limits.max_input_images:
        errors.add("inputImageUrls", f"has {len(image_urls)} entries; the limit is {limits.max_input_images}")
    checked: list[str] = []
    for index, url in enumerate(image_urls):
        if not isinstance(url, str):
            errors.add("inputImageUrls", f"item {index} must be a string")
            continue
        if len(url) > limits.max_url_chars:
            errors.add("inputImageUrls", f"item {index} is longer than {limits.max_url_chars} characters")
            continue
        if url.lower().startswith("s3://"):
            reason = _check_s3_uri(url, policy.input_bucket)
        else:
            reason = urls.check_public_https_url(url, policy.allow_hosts, policy.resolver)
        if reason:
            errors.add("inputImageUrls", f"item {index} {reason}")
        else:
            checked.append(url)
    return tuple(checked)


def _provider_input(
    document: Mapping[str, Any], limits: JobLimits, errors: _FieldErrors
) -> dict[str, Any] | None:
    provider_input = document.get("providerInput")
    if provider_input is None:
        return None
    if not isinstance(provider_input, Mapping):
        errors.add("providerInput", "must be a JSON object")
        return None
    size = len(json.dumps(provider_input, default=str).encode("utf-8"))
    if size > limits.max_provider_input_bytes:
        errors.add("providerInput", f"is {size} bytes; the limit is {limits.max_provider_input_bytes}")
    return dict(provider_input)


def _output_prefix(document: Mapping[str, Any], limits: JobLimits, errors: _FieldErrors) -> Any:
    """A relative key prefix, ending in / (added when missing)."""
    output_prefix = document.get("outputPrefix")
    if output_prefix is None:
        return None
    if not isinstance(output_prefix, str) or not output_prefix:
        errors.add("outputPrefix", "must be a non-empty string")
    elif output_prefix.startswith("/"):
        errors.add("outputPrefix", "must be relative (no leading /)")
    elif ".." in output_prefix or "//" in output_prefix:
        errors.add("outputPrefix", "must not contain '..' or '//'")
    elif len(output_prefix) > limits.max_output_prefix_chars:
        errors.add("outputPrefix", f"is longer than {limits.max_output_prefix_chars} characters")
    elif not OUTPUT_PREFIX_RE.match(output_prefix):
        errors.add("outputPrefix", "may only contain letters, digits and !_.*'()/-")
    elif not output_prefix.endswith("/"):
        return output_prefix + "/"
    return output_prefix


def _metadata(document: Mapping[str, Any], limits: JobLimits, errors: _FieldErrors) -> dict[str, str]:
    """String-to-string metadata for the output objects, within S3's rules and size."""
    metadata = document.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        errors.add("metadata", "must be an object of string to string")
        return {}
    clean: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(value, str):
            errors.add("metadata", f"value of {key!r} must be a string")
            continue
        if not METADATA_KEY_RE.match(str(key)):
            errors.add("metadata", f"key {key!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
            continue
        total += len(str(key).encode("utf-8")) + len(value.encode("utf-8"))
        clean[str(key)] = value
    if len({k.lower() for k in clean}) != len(clean):
        errors.add("metadata", "keys must be unique ignoring case (S3 lower-cases them)")
    if total > limits.max_metadata_bytes:
        errors.add("metadata", f"is {total} bytes; the limit is {limits.max_metadata_bytes}")
    return clean


def _webhook_url(document: Mapping[str, Any], policy: _UrlPolicy, errors: _FieldErrors) -> Any:
    webhook_url = document.get("webhookUrl")
    if webhook_url is not None:
        if not isinstance(webhook_url, str):
            errors.add("webhookUrl", "must be a URL string")
        elif reason := urls.check_public_https_url(webhook_url, policy.allow_hosts, policy.resolver):
            errors.add("webhookUrl", reason)
    return webhook_url


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
