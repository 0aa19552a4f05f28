"""PollFunction: one provider poll per Step Functions iteration."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import Runtime
from imagejobs.workflow import poll_step

runtime = Runtime()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return poll_step(event, runtime.provider)
