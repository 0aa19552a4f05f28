"""IntakeFunction: SQS batch of job messages → validate, record, submit once, start the execution."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.intake import handle_job_message
from imagejobs.observability import logger, metrics, tracer, unbind_job
from imagejobs.runtime import Runtime

runtime = Runtime()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
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
        raise RetryLater(f"{outcome.job_id}: {outcome.reason}")
    return outcome.reason


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    lease = _lease_seconds(context)
    return dict(
        process_partial_response(
            event=event,
            record_handler=lambda record: record_handler(record, lease),
            processor=processor,
            context=context,
        )
    )
