"""Cancelling a job (`imagejobs cancel`, docs/control.md): record CANCELLED, then stop its loop.

The record is written first, conditionally (``JobStore.mark_cancelled``): whatever the intake or
the poll loop does next finds a terminal record and leaves it (a claim, SUBMITTED, COMPLETED and
FAILED all start from other statuses). Only then are the job's executions stopped, so a stop that
fails, or an execution that ends on its own meanwhile, never leaves the job unfinished.

The provider has no cancel endpoint: a running job's credits are spent (``creditsUsed`` stays on
the record), and its task may still finish at the provider; nothing copies its outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from imagejobs import store as records
from imagejobs.store import JobStatus, JobStore

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

Result = Literal["cancelled", "already_finished", "in_flight", "not_found"]
DEFAULT_REASON = "cancelled by the user"


@dataclass(frozen=True)
class CancelOutcome:
    job_id: str
    result: Result
    status: str | None  # the record's status after the call
    was_submitted: bool = False  # cancelled while running: its credits are spent
    credits_used: int | None = None
    stopped_executions: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        if self.result == "not_found":
            return f"{self.job_id}: no such job"
        if self.result == "already_finished":
            return f"{self.job_id}: already {self.status}; left as it is"
        if self.result == "in_flight":
            return f"{self.job_id}: being submitted right now; try again in a few seconds"
        if self.was_submitted:
            return (
                f"{self.job_id}: CANCELLED while running; its {self.credits_used or 0} credits are spent "
                "(the provider cannot cancel a task)"
            )
        return f"{self.job_id}: CANCELLED before it was submitted; no credits spent"


def execution_arns(record: Mapping[str, Any]) -> list[str]:
    """Every execution that carried the job: the first (``executionArn``) and its hand-overs."""
    first = record.get("executionArn")
    if not isinstance(first, str) or not first:
        return []
    prefix = first.rsplit(":", 1)[0]
    names = [str(name) for name in record.get("executions") or []]
    return list(dict.fromkeys([first, *(f"{prefix}:{name}" for name in names)]))


def cancel_job(
    job_id: str,
    *,
    store: JobStore,
    sfn: SFNClient,
    reason: str = DEFAULT_REASON,
    now: Callable[[], float] = time.time,
) -> CancelOutcome:
    """Cancel one job; idempotent (a second call finds it CANCELLED and says so)."""
    result = store.mark_cancelled(job_id, reason, now=now())
    record = result.record or {}
    if not result.applied:
        if result.status is None:
            return CancelOutcome(job_id, "not_found", None)
        if result.status in records.TERMINAL:
            return CancelOutcome(job_id, "already_finished", result.status)
        return CancelOutcome(job_id, "in_flight", result.status)
    submitted = bool(record.get("taskId"))
    stopped = tuple(arn for arn in execution_arns(record) if _stop(sfn, arn, reason))
    credits = record.get("creditsUsed")
    return CancelOutcome(
        job_id,
        "cancelled",
        JobStatus.CANCELLED,
        was_submitted=submitted,
        credits_used=int(credits) if isinstance(credits, int | float) else None,
        stopped_executions=stopped,
    )


def _stop(sfn: SFNClient, arn: str, reason: str) -> bool:
    """Stop one execution; one that has ended (or never started) is fine as it is."""
    try:
        sfn.stop_execution(executionArn=arn, error="ImageJobs.Cancelled", cause=reason[:256])
    except ClientError as error:
        # Ended or never started; or EXPRESS, which StopExecution does not support: its loop runs
        # on, and its writes find the record CANCELLED.
        if error.response.get("Error", {}).get("Code") in (
            "ExecutionDoesNotExist",
            "InvalidArn",
            "ValidationException",
        ):
            return False
        raise
    return True
