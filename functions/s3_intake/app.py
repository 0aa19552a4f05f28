"""S3IntakeFunction: S3 ObjectCreated events (via the uploads queue) → image jobs and JSONL batches."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import S3IntakeSettings
from imagejobs.invocation import time_left_clock
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import S3IntakeRuntime
from imagejobs.sqs_retry import receive_count, redeliver_after, send_again
from imagejobs.uploads import UploadContext, failed_event_retry_seconds, handle_upload_message

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = S3IntakeRuntime(S3IntakeSettings.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    time_left = time_left_clock(lambda_context)
    uploads_queue_url = runtime.settings.uploads_queue_url
    try:
        uploads = UploadContext(runtime.s3, runtime.sqs, runtime.store, runtime.settings)
        outcomes = handle_upload_message(record.body, uploads, time_left=time_left)
        if any(o.action == "resume" for o in outcomes):
            # Sent again rather than retried: every receive counts towards the queue's
            # maxReceiveCount, and a long batch may pause many times. Its other objects are
            # idempotent (already processed, or the same job ids).
            send_again(runtime.sqs, queue_url=uploads_queue_url, body=record.body, seconds=0)
    except Exception:
        retry_in = failed_event_retry_seconds(receive_count(record))
        logger.exception("upload event failed; offered again later", extra={"retry_in_seconds": retry_in})
        redeliver_after(
            runtime.sqs,
            queue_arn=record.event_source_arn,
            receipt_handle=record.receipt_handle,
            seconds=retry_in,
            configured_url=uploads_queue_url,
        )
        raise
    return "; ".join(f"{o.kind} {o.key}: {o.reason}" for o in outcomes) or "s3:TestEvent"


# One invocation at a time per execution environment: one processor per environment, as Powertools shows.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Powertools passes the Lambda context to a record handler with a `lambda_context` parameter.
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
