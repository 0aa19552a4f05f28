"""FinalizeFunction: record FAILED (provider or pipeline) or TIMED_OUT, or a refund seen later."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import FinalizeSettings
from imagejobs.execution_state import FinalizeInput, FinalizeResult
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import FinalizeRuntime
from imagejobs.workflow import finalize_step

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = FinalizeRuntime(FinalizeSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: FinalizeInput, context: LambdaContext) -> FinalizeResult:
    return finalize_step(event, runtime.store, refund_recheck_delays=runtime.settings.refund_recheck_delays)
