"""One uploads-queue message: each object it names handled by its kind; when a failed one comes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from imagejobs.observability import logger
from imagejobs.uploads.batches import process_batch
from imagejobs.uploads.context import UploadContext
from imagejobs.uploads.events import UploadOutcome, classify, derived_job_id, parse_upload_message
from imagejobs.uploads.images import handle_image_upload, handle_sidecar_upload, reject_upload

if TYPE_CHECKING:
    pass

# When an S3 event whose processing raised (an AWS error, an unreadable body) is offered again, by
# its receive count: sooner than the queue's 90-minute visibility timeout, later each time; the
# queue's maxReceiveCount (5) then moves it to the dead-letter queue, about 40 minutes after the first.
FAILED_EVENT_RETRY_SECONDS = (30.0, 120.0, 600.0, 1800.0)


def failed_event_retry_seconds(receive_count: int | None) -> float:
    """How long a failed S3 event waits before it is offered again (FAILED_EVENT_RETRY_SECONDS)."""
    attempt = max(1, receive_count or 1)
    return FAILED_EVENT_RETRY_SECONDS[min(attempt, len(FAILED_EVENT_RETRY_SECONDS)) - 1]


def handle_upload_message(
    body: str | bytes, uploads: UploadContext, *, time_left: Callable[[], float] | None = None
) -> list[UploadOutcome]:
    """Every object of one uploads-queue message; raises (the message is retried) on AWS errors."""
    settings = uploads.settings
    outcomes = []
    for ref in parse_upload_message(body):
        kind, why = classify(ref.key, settings)
        if ref.bucket != settings.output_bucket:
            kind, why = "ignored", f"bucket {ref.bucket} is not the stack's bucket"
        if kind == "image":
            outcome = handle_image_upload(ref, uploads)
        elif kind == "sidecar":
            outcome = handle_sidecar_upload(ref, uploads)
        elif kind == "batch":
            outcome = process_batch(ref, uploads, time_left=time_left)
        elif kind == "unsupported":
            job_id = derived_job_id("up", ref.bucket, ref.key, ref.identity)
            errors = {"key": [f"{ref.key} {why}"]}
            outcome = reject_upload(uploads.store, ref, job_id, errors, {}, uploads.now, kind)
        else:
            logger.warning("upload ignored", extra={"key": ref.key, "reason": why})
            outcome = UploadOutcome("ack", "ignored", why, ref.key)
        outcomes.append(outcome)
    return outcomes
