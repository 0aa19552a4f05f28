"""WebhookFunction: queued webhook deliveries → signed POSTs, retried on the delay schedule."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import WebhookSettings
from imagejobs.observability import count, logger, metrics, tracer
from imagejobs.runtime import WebhookRuntime
from imagejobs.sqs_retry import RetryLater, redeliver_after
from imagejobs.webhooks import handle_delivery_message

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = WebhookRuntime(WebhookSettings.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord) -> str:
    outcome = handle_delivery_message(
        record.body,
        int(record.attributes.approximate_receive_count),
        session=runtime.session,
        signer=runtime.signer(),
        delays=runtime.settings.retry_delays,
        dead_letters=runtime.dead_letters,
        allow_hosts=runtime.settings.url_allow_hosts,
    )
    logger.info("webhook delivery", extra={"webhookId": outcome.webhook_id, "outcome": outcome.reason})
    if outcome.retry_after is not None:
        count("WebhookRetries")
        redeliver_after(
            runtime.sqs,
            queue_arn=record.event_source_arn,
            receipt_handle=record.receipt_handle,
            seconds=outcome.retry_after,
            configured_url=runtime.settings.webhook_queue_url,
        )
        raise RetryLater(f"{outcome.webhook_id}: {outcome.reason}")
    count("WebhooksDeadLettered" if outcome.dead_letter_reason else "WebhooksDelivered")
    return outcome.reason


# One invocation at a time per execution environment: one processor per environment, as Powertools shows.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
