"""PollFunction: one provider poll per Step Functions iteration."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import PollSettings
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import PollRuntime
from imagejobs.workflow import poll_step

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = PollRuntime(PollSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return poll_step(event, runtime.provider)
