"""JobEventsFunction: the jobs table's change stream → "Job State Change" events on EventBridge
(and, for jobs with a webhookUrl, their deliveries on WebhookDeliveryQueue); batches' jobs
counted, complete batches queued for their results, "Batch Completed" published."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.batches import follow_change
from imagejobs.config import JobEventsSettings
from imagejobs.events import publish_change
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import JobEventsRuntime

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = JobEventsRuntime(JobEventsSettings.from_env())

# A stream batch that times out is retried whole, and would time out again at the same record:
# with this little time left, the remaining records are reported failed untouched, so the retry
# resumes from the first of them and every invocation makes progress.
STOP_WITH_MILLISECONDS_LEFT = 5_000


class OutOfTime(Exception):
    """Left for the batch's retry: the invocation is about to reach its timeout."""


@tracer.capture_method
def record_handler(record: DynamoDBRecord, lambda_context: LambdaContext) -> str:
    if lambda_context.get_remaining_time_in_millis() < STOP_WITH_MILLISECONDS_LEFT:
        raise OutOfTime(f"under {STOP_WITH_MILLISECONDS_LEFT} ms left; the batch's retry resumes here")
    change = record.dynamodb
    if change is None:
        return "no images"
    # A failure raises: the batch resumes from this record (ReportBatchItemFailures); both steps
    # are idempotent (events keep their ids, a job is counted in its batch once).
    published = publish_change(change.old_image, change.new_image, runtime.publisher, runtime.webhooks)
    followed = follow_change(
        change.old_image,
        change.new_image,
        batches=runtime.batches,
        results=runtime.results_queue,
        publisher=runtime.publisher,
        webhooks=runtime.webhooks,
    )
    return published if followed is None else f"{published}; {followed}"


# One invocation at a time per execution environment: one processor per environment, as Powertools shows.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
