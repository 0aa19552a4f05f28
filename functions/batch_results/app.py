"""BatchResultsFunction: a complete batch (from BatchResultsQueue) → its results and summary in S3."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.batch_results import write_results
from imagejobs.batches import BatchNotOpen
from imagejobs.config import BatchResultsSettings
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import BatchResultsRuntime
from imagejobs.sqs_retry import lease_seconds

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = BatchResultsRuntime(BatchResultsSettings.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    batch_id = str(json.loads(record.body)["batchId"])
    logger.append_keys(batch_id=batch_id)
    try:
        summary = write_results(
            batch_id,
            batches=runtime.batches,
            records=runtime.records,
            s3=runtime.s3,
            lease_seconds=lease_seconds(lambda_context),
        )
    except BatchNotOpen as taken:
        # Written, or being written under a live lease: a duplicate message has nothing to do.
        logger.info("batch results not claimed", extra={"reason": str(taken)})
        return str(taken)
    # BatchNotSettled and AWS errors raise: the message comes back after its visibility timeout.
    logger.info("batch results written", extra={"jobs": summary["jobs"], "by_status": summary["byStatus"]})
    return f"{batch_id}: {summary['jobs']} jobs"


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
