"""IntakeFunction: SQS batch of job messages → validate, record, submit once, start the execution."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.intake import handle_job_message
from imagejobs.observability import logger, metrics, tracer, unbind_job
from imagejobs.runtime import Runtime

runtime = Runtime()
DEFAULT_LEASE_SECONDS = 900.0  # Lambda's maximum timeout, when no context tells us ours


class RetryLater(Exception):
    """Marks the SQS record as a batch item failure: SQS redelivers it after the visibility timeout."""


def _lease_seconds(context: Any) -> float:
    # The claim must outlive this invocation: use the function's remaining time plus a margin.
    try:
        return float(context.get_remaining_time_in_millis()) / 1000.0 + 30.0
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_LEASE_SECONDS


@tracer.capture_method
def record_handler(record: SQSRecord, lease_seconds: float) -> str:
    try:
        outcome = handle_job_message(
            record.body,
            record.message_id,
            store=runtime.store,
            provider=runtime.provider,
            sfn=runtime.sfn,
            s3=runtime.s3,
            settings=runtime.settings,
            lease_seconds=lease_seconds,
        )
    finally:
        unbind_job()
    if not outcome.ack:
        if outcome.retry_after_seconds is not None:
            _redeliver_after(record, outcome.retry_after_seconds)
        raise RetryLater(f"{outcome.job_id}: {outcome.reason}")
    return outcome.reason


@cache
def _queue_url(queue_arn: str) -> str:
    # The trigger is the jobs queue, whose URL the environment carries (no sqs:GetQueueUrl needed).
    _, _, _, _, account, name = queue_arn.split(":", 5)
    configured = runtime.settings.jobs_queue_url
    if configured.rstrip("/").endswith(f"/{account}/{name}"):
        return configured
    return str(runtime.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def _redeliver_after(record: SQSRecord, seconds: float) -> None:
    # Shorten the failed message's visibility so SQS offers it again soon instead of after the
    # queue's full timeout. Best effort: if this fails, the normal timeout still redelivers it.
    try:
        runtime.sqs.change_message_visibility(
            QueueUrl=_queue_url(record.event_source_arn),
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=max(0, min(43_200, math.ceil(seconds))),
        )
    except Exception:
        logger.warning("could not shorten the retry delay; the queue's visibility timeout applies")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    lease = _lease_seconds(context)
    # One processor per invocation: it keeps the batch's successes/failures on itself, so a shared one
    # mixes up concurrent invocations in one process (the local stack) and can ack a failed message.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(
        process_partial_response(
            event=event,
            record_handler=lambda record: record_handler(record, lease),
            processor=processor,
            context=context,
        )
    )
