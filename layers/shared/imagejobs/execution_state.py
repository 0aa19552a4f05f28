"""The state a job's execution carries from step to step (statemachine/job.asl.json), as types.

IntakeFunction starts the execution with an `ExecutionState`; PollFunction returns it with
`polls` counted and the last `poll`; the Task states add `stored`, `refund`, `error` and
`outcome` at their ResultPaths. FinalizeFunction gets a `FinalizeInput` and answers a
`FinalizeResult`, whose fields the Record* states select into `refund`.
tests/unit/statemachine/test_state_paths.py checks that every `$.…` path of the definition is a key
declared here, so a renamed field cannot leave the ASL reading a key nobody writes.
"""

from __future__ import annotations

from typing import Any, TypedDict


class PollSummary(TypedDict, total=False):
    """`$.poll`: the last provider snapshot, as the Choice states read it."""

    status: str  # the provider's: PENDING, COMPLETED or FAILED
    deadlineExceeded: bool
    outputUrls: list[str]
    errorCode: str | None
    errorMessage: str | None
    creditsUsed: int | None
    creditsRefunded: int
    providerSeconds: float  # the provider's own clock, creation to finish
    handoverDue: bool  # EXPRESS: this execution has run handoverAfterSeconds
    handovers: int
    nextExecutionName: str  # the execution handed over to: <jobId>-<n>


class RefundProgress(TypedDict, total=False):
    """`$.refund`: what the Record* states select from a `FinalizeResult`."""

    recheckAfterSeconds: int  # 0: nothing to wait for
    checks: int


class StepError(TypedDict, total=False):
    """`$.error` / `$.refundError`: a Catch's error output, or MarkUnexpectedPollResult's."""

    Error: str
    Cause: str


class ExecutionState(TypedDict, total=False):
    """The execution's input and, through PollFunction, its state between steps."""

    jobId: str
    taskId: str
    kind: str  # image or video: the deadline and the copier's defaults depend on it
    pollIntervalSeconds: int  # the Wait before each poll
    steadyPollIntervalSeconds: int  # with a longer first wait (FirstPollAfter): the interval after it
    deadline: float  # epoch seconds: a task still pending then is TIMED_OUT
    polls: int
    handoverAfterSeconds: float  # EXPRESS: hand over to a fresh execution after this long
    segmentStartedAt: float  # when this execution began polling
    handovers: int
    previousExecution: str  # the execution that handed over (its ARN)
    poll: PollSummary
    stored: dict[str, Any]  # StoreOutputs' answer, under "result"
    refund: RefundProgress
    refundError: StepError
    error: StepError
    outcome: str  # set by MarkPipelineError: ERROR


class FinalizeInput(TypedDict, total=False):
    """FinalizeFunction's event: a Record* state's Payload, or the whole state (RecordError)."""

    jobId: str
    taskId: str
    outcome: str  # FAILED, REFUND, TIMED_OUT or ERROR (absent with an error: ERROR)
    poll: PollSummary
    polls: int
    refundChecks: int
    error: StepError


class FinalizeResult(TypedDict):
    jobId: str
    status: str | None
    applied: bool
    reason: str
    refundRecheckAfterSeconds: int  # 0: no refund to wait for
    refundChecks: int
