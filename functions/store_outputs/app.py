"""StoreOutputsFunction: stream the provider's outputs into S3 and record COMPLETED."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import StoreOutputsSettings
from imagejobs.invocation import remaining_seconds
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import StoreOutputsRuntime
from imagejobs.workflow import store_outputs_step

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = StoreOutputsRuntime(StoreOutputsSettings.from_env())
RECORD_MARGIN_SECONDS = 20.0  # left for recording COMPLETED after the downloads


def _time_budget(context: LambdaContext) -> float | None:
    remaining = remaining_seconds(context)
    return None if remaining is None else max(1.0, remaining - RECORD_MARGIN_SECONDS)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return store_outputs_step(
        event,
        runtime.store,
        runtime.copier,
        default_prefix=runtime.settings.output_prefix,
        time_budget_seconds=_time_budget(context),
    )
