"""PollFunction: polls the provider task (up to PollsPerInvocation times) per Step Functions iteration."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext
from imagejobs.config import PollSettings
from imagejobs.execution_state import ExecutionState
from imagejobs.invocation import time_left_clock
from imagejobs.observability import logger, metrics, tracer
from imagejobs.runtime import PollRuntime
from imagejobs.workflow import PollBudget, poll_step

# Settings parsed at import: a missing or invalid variable fails the init, naming the variable.
runtime = PollRuntime(PollSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: ExecutionState, context: LambdaContext) -> ExecutionState:
    budget = PollBudget(
        polls=runtime.settings.polls_per_invocation,
        remaining_seconds=time_left_clock(context),
    )
    return poll_step(event, runtime.provider, budget=budget)
