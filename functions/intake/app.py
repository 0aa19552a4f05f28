"""IntakeFunction: SQS batch of job messages → validate, record, submit once, start the execution."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import IntakeSettings
from imagejobs.intake import handle_job_message, note_last_receive
from imagejobs.observability import logger, metrics, tracer, unbind_job
from imagejobs.runtime import IntakeRuntime
from imagejobs.sqs_retry import RetryLater, lease_seconds, receive_count, redeliver_after, send_again

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = IntakeRuntime(IntakeSettings.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord, lease: float) -> str:
    try:
        outcome = handle_job_message(
            record.body,
            record.message_id,
            store=runtime.store,
            provider=runtime.provider,
            sfn=runtime.sfn,
            s3=runtime.s3,
            settings=runtime.settings,
            lease_seconds=lease,
            first_poll=runtime.first_poll,
        )
        if outcome.action == "retry":
            note_last_receive(
                runtime.store,
                outcome,
                receive_count(record),
                runtime.settings.jobs_max_receive_count,
            )
    finally:
        unbind_job()
    if outcome.action == "requeue" and outcome.requeue_body is not None:
        send_again(
            runtime.sqs,
            queue_url=runtime.settings.jobs_queue_url,
            body=outcome.requeue_body,
            seconds=outcome.retry_after_seconds or 0,
        )
        return outcome.reason
    if not outcome.ack:
        if outcome.retry_after_seconds is not None:
            redeliver_after(
                runtime.sqs,
                queue_arn=record.event_source_arn,
                receipt_handle=record.receipt_handle,
                seconds=outcome.retry_after_seconds,
                configured_url=runtime.settings.jobs_queue_url,
            )
        raise RetryLater(f"{outcome.job_id}: {outcome.reason}")
    return outcome.reason


# One invocation at a time per execution environment: one processor per environment, as Powertools shows.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    lease = lease_seconds(context)
    return dict(
        process_partial_response(
            event=event,
            record_handler=lambda record: record_handler(record, lease),
            processor=processor,
            context=context,
        )
    )
