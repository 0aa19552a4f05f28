"""Image and sidecar uploads: checked (exists, not ours, size, magic bytes), then enqueued as an
image-to-image job, or recorded as REJECTED with the reason per field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from imagejobs import jobs
from imagejobs.copier import sniff
from imagejobs.observability import count, logger
from imagejobs.store import JobStore
from imagejobs.uploads.context import UploadContext
from imagejobs.uploads.events import (
    SIDECAR_SUFFIX,
    Kind,
    S3ObjectRef,
    UploadOutcome,
    classify,
    derived_job_id,
    version_of,
)
from imagejobs.uploads.objects import OUTPUT_MARKER_METADATA, head_object, user_metadata
from imagejobs.uploads.recipes import resolve_image_job

if TYPE_CHECKING:
    pass

MAGIC_BYTES = 64
UPLOADS_REJECTED = "UploadsRejected"
UPLOADS_ENQUEUED = "UploadJobsEnqueued"
RECURSION_GUARD = "UploadRecursionPrevented"


def _partial(message: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name in ("jobId", "prompt", "model", "aspectRatio"):
        if isinstance(message.get(name), str):
            kept[name] = message[name][:2000]
    urls = message.get("inputImageUrls")
    if isinstance(urls, list):
        kept["inputImageUrls"] = [u for u in urls if isinstance(u, str)][:16]
    return kept


def reject_upload(
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


def handle_image_upload(ref: S3ObjectRef, uploads: UploadContext) -> UploadOutcome:
    """Validate the upload (exists, not ours, size, magic bytes), resolve its options, enqueue the job."""
    s3, sqs, store, settings, now = uploads.s3, uploads.sqs, uploads.store, uploads.settings, uploads.now
    head = head_object(s3, ref.bucket, ref.key, ref.version_id)
    if head is None:
        job_id = derived_job_id("up", ref.bucket, ref.key, ref.identity, "missing")
        errors = {"upload": ["the object no longer exists (deleted before it was processed)"]}
        return reject_upload(store, ref, job_id, errors, {"inputImageUrls": [ref.uri]}, now)
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
        return reject_upload(
            store, ref, fallback_id, {"upload": ["is empty (0 bytes)"]}, {"inputImageUrls": [ref.uri]}, now
        )
    if size > settings.max_upload_bytes:
        errors = {"upload": [f"is {size} bytes; the limit is {settings.max_upload_bytes}"]}
        return reject_upload(store, ref, fallback_id, errors, {"inputImageUrls": [ref.uri]}, now)
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key, "Range": f"bytes=0-{MAGIC_BYTES - 1}"}
    if ref.version_id:
        kwargs["VersionId"] = ref.version_id
    with s3.get_object(**kwargs)["Body"] as body:
        head_bytes = body.read(MAGIC_BYTES)
    sniffed = sniff(head_bytes)
    if sniffed is None or not sniffed[0].startswith("image/"):
        what = sniffed[0] if sniffed else "unrecognised bytes"
        errors = {"upload": [f"is not an image ({what}; expected PNG, JPEG, WebP or GIF)"]}
        return reject_upload(store, ref, fallback_id, errors, {"inputImageUrls": [ref.uri]}, now)

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
        return reject_upload(store, ref, job_id, resolved.errors, message, now)
    sqs.send_message(QueueUrl=settings.jobs_queue_url, MessageBody=json.dumps(message))
    count(UPLOADS_ENQUEUED)
    logger.info("upload enqueued as a job", extra={"key": ref.key, "job_id": job_id})
    return UploadOutcome("ack", "image", "enqueued", ref.key, job_id)


def handle_sidecar_upload(ref: S3ObjectRef, uploads: UploadContext) -> UploadOutcome:
    """A sidecar uploaded after its image starts the image's job; one uploaded first waits for it."""
    image_key = ref.key[: -len(SIDECAR_SUFFIX)]
    image = head_object(uploads.s3, ref.bucket, image_key)
    if image is None or classify(image_key, uploads.settings)[0] != "image":
        logger.info("sidecar stored; its image's upload will use it", extra={"key": ref.key})
        return UploadOutcome("ack", "sidecar", f"waiting for {image_key}", ref.key)
    image_ref = S3ObjectRef(
        ref.bucket, image_key, str(image.get("ETag", "")).strip('"'), version_of(image.get("VersionId"))
    )
    outcome = handle_image_upload(image_ref, uploads)
    return UploadOutcome(outcome.action, "sidecar", outcome.reason, ref.key, outcome.job_id)
