"""One uploads-queue message: each object it names handled by its kind; when a failed one comes back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from imagejobs.batches import BatchStore
from imagejobs.config import S3IntakeSettings
from imagejobs.observability import logger
from imagejobs.store import JobStore
from imagejobs.uploads.batches import process_batch
from imagejobs.uploads.events import UploadOutcome, classify, derived_job_id, parse_upload_message
from imagejobs.uploads.images import handle_image_upload, handle_sidecar_upload, reject_upload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# When an S3 event whose processing raised (an AWS error, an unreadable body) is offered again, by
# its receive count: sooner than the queue's 90-minute visibility timeout, later each time; the
# queue's maxReceiveCount (5) then moves it to the dead-letter queue, about 40 minutes after the first.
FAILED_EVENT_RETRY_SECONDS = (30.0, 120.0, 600.0, 1800.0)


def failed_event_retry_seconds(receive_count: int | None) -> float:
    """How long a failed S3 event waits before it is offered again (FAILED_EVENT_RETRY_SECONDS)."""
    attempt = max(1, receive_count or 1)
    return FAILED_EVENT_RETRY_SECONDS[min(attempt, len(FAILED_EVENT_RETRY_SECONDS)) - 1]


def handle_upload_message(
    body: str | bytes,
    *,
    s3: S3Client,
    sqs: SQSClient,
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
            outcome = reject_upload(store, ref, job_id, {"key": [f"{ref.key} {why}"]}, {}, now, kind)
        else:
            logger.warning("upload ignored", extra={"key": ref.key, "reason": why})
            outcome = UploadOutcome("ack", "ignored", why, ref.key)
        outcomes.append(outcome)
    return outcomes
