"""The Step Functions steps: poll, store outputs, finalize (statemachine/job.asl.json).

Each step is a plain function over injected clients. ``ProviderTransientError`` is
the one error the state machine retries; anything else raised goes to its Catch and
ends in ``finalize_step`` with outcome ERROR (FAILED, source pipeline).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagejobs import budget as credit_budget
from imagejobs import store as records
from imagejobs.copier import OutputCopier, OutputCopyError, TransientCopyError
from imagejobs.execution_state import ExecutionState, FinalizeInput, FinalizeResult, PollSummary
from imagejobs.jobs import JobRequest
from imagejobs.observability import (
    CREDITS_REFUNDED,
    DETECTION_DELAY_SECONDS,
    JOB_LATENCY_SECONDS,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_TIMED_OUT,
    bind_job,
    count,
    logger,
    redact,
    seconds,
)
from imagejobs.provider import ProviderError, TaskReader, TaskSnapshot, TaskStatus
from imagejobs.store import JobStatus, JobStore, TransitionResult


class ProviderTransientError(Exception):
    """Retry me: 429, 5xx, unreachable, timeouts (matched by name in the state machine's Retry)."""


class JobRecordMissing(Exception):
    """The execution refers to a job with no record (never expected; goes to Catch)."""


def refunded_credits(refunded: bool | int | None, credits_used: int | None) -> int:
    """The provider reports refunds as a flag (amount = creditsUsed) or an amount."""
    if isinstance(refunded, bool):
        return (credits_used or 0) if refunded else 0
    if isinstance(refunded, int):
        return refunded
    return 0


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return records.parse_iso(value)
    except ValueError:
        return None


# One poll's worst case: the provider client's retry budget (60 s) plus a last attempt's connect
# and read timeouts (33 s), rounded up. PollFunction's Timeout (180 s) leaves room for 30 polls.
POLL_RESERVE_SECONDS = 100.0


@dataclass(frozen=True)
class PollBudget:
    """How many polls one PollFunction call may make (template parameter PollsPerInvocation), and
    the function's remaining time: a further poll starts only with ``POLL_RESERVE_SECONDS`` left
    after its wait, so a slow provider ends the call with a snapshot, never with a timeout."""

    polls: int = 1
    remaining_seconds: Callable[[], float] = field(default=lambda: math.inf)
    sleep: Callable[[float], None] = field(default=time.sleep)


def poll_step(
    state: ExecutionState,
    provider: TaskReader,
    now: Callable[[], float] = time.time,
    budget: PollBudget = PollBudget(),
) -> ExecutionState:
    """Poll the provider up to ``budget.polls`` times, ``pollIntervalSeconds`` apart, stopping at
    the first snapshot the state machine acts on (done, failed, deadline, hand-over); return the
    state with ``polls`` counted and the last ``poll`` summary.

    ``steadyPollIntervalSeconds`` (a longer first wait, FirstPollAfter) becomes the interval here.
    """
    job_id = str(state["jobId"])
    task_id = str(state["taskId"])
    bind_job(job_id, task_id=task_id)
    interval = int(state.get("steadyPollIntervalSeconds", state.get("pollIntervalSeconds")) or 0)
    current = ExecutionState(**state)
    current.pop("steadyPollIntervalSeconds", None)
    current["pollIntervalSeconds"] = interval
    for attempt in range(1, budget.polls + 1):
        try:
            current = _poll_once(current, provider, now())
        except ProviderTransientError:
            if attempt == 1:
                raise
            # Later polls of one call: the snapshot in hand is a true PENDING; the next cycle polls
            # again after its Wait, and the state machine retries the first poll's errors as ever.
            logger.warning("transient provider error in a multi-poll call; polling again next cycle")
            break
        if not _keeps_polling(current["poll"]) or attempt == budget.polls:
            break
        if budget.remaining_seconds() < interval + POLL_RESERVE_SECONDS:
            break
        budget.sleep(interval)
    logger.info("polled", extra={"status": current["poll"]["status"], "polls": current["polls"]})
    return current


def _keeps_polling(poll: PollSummary) -> bool:
    return (
        poll["status"] == str(TaskStatus.PENDING)
        and not poll["deadlineExceeded"]
        and not poll.get("handoverDue")
    )


def _poll_once(state: ExecutionState, provider: TaskReader, moment: float) -> ExecutionState:
    """One GET: the state with ``polls`` + 1 and this snapshot's ``poll`` summary."""
    try:
        snapshot: TaskSnapshot = provider.get_task(str(state["taskId"]))
    except ProviderError as error:
        if error.retryable:
            raise ProviderTransientError(f"{type(error).__name__}: {redact(str(error))}") from None
        raise
    deadline = float(state.get("deadline") or 0)
    pending = snapshot.status is TaskStatus.PENDING
    poll = PollSummary(
        {
            "status": str(snapshot.status),
            "deadlineExceeded": bool(pending and deadline and moment >= deadline),
            "outputUrls": list(snapshot.output_urls),
            "errorCode": snapshot.error_code,
            "errorMessage": snapshot.error_message,
            "creditsUsed": snapshot.credits_used,
            "creditsRefunded": refunded_credits(snapshot.credits_refunded, snapshot.credits_used),
        }
    )
    if not pending:
        finished = _epoch(snapshot.completed_at) or _epoch(snapshot.updated_at)
        if finished is not None:
            seconds(DETECTION_DELAY_SECONDS, moment - finished)
            created = _epoch(snapshot.created_at)
            if created is not None and finished >= created:
                # The provider's own clock at both ends: FirstPollAfter=auto learns from it.
                poll["providerSeconds"] = round(finished - created, 3)
    started = _handover(state, poll, moment, pending and not poll["deadlineExceeded"])
    polled = ExecutionState(**state)
    polled["polls"] = int(state.get("polls") or 0) + 1
    polled["poll"] = poll
    if started is not None:
        polled["segmentStartedAt"] = started
    return polled


def _handover(state: ExecutionState, poll: PollSummary, moment: float, pending: bool) -> float | None:
    """EXPRESS executions stop at 5 minutes: with ``handoverAfterSeconds`` in the state, report
    ``poll.handoverDue`` once this execution has run that long, with the next execution's name
    (``<jobId>-<n>``); the state machine then starts it with the state and this one succeeds.

    ``segmentStartedAt`` (epoch seconds) is when this execution began; a handed-over execution
    gets none, so its first poll sets it (one poll interval before now). Returns it (None: no
    hand-over configured).
    """
    limit = float(state.get("handoverAfterSeconds") or 0)
    if limit <= 0:
        return None
    started = state.get("segmentStartedAt")
    if not isinstance(started, int | float):
        started = round(moment - float(state.get("pollIntervalSeconds") or 0), 3)
    handovers = int(state.get("handovers") or 0)
    due = bool(pending and moment - float(started) >= limit)
    poll["handoverDue"] = due
    if due:
        poll["handovers"] = handovers + 1
        poll["nextExecutionName"] = f"{str(state['jobId'])[:72]}-{handovers + 1}"
        logger.info("handing over to a fresh execution", extra={"execution": poll["nextExecutionName"]})
    return float(started)


def _latency(record: Mapping[str, Any], poll: Mapping[str, Any], now: float) -> dict[str, Any]:
    latency = dict(record.get("latency") or {})
    if isinstance(poll.get("providerSeconds"), int | float):
        latency["providerSeconds"] = poll["providerSeconds"]
    submitted = _epoch(record.get("submittedAt"))
    created = _epoch(record.get("createdAt"))
    if submitted is not None:
        latency["generationSeconds"] = round(now - submitted, 3)
    if created is not None:
        latency["totalSeconds"] = round(now - created, 3)
    return latency


def store_outputs_step(
    state: Mapping[str, Any],
    store: JobStore,
    copier: OutputCopier,
    *,
    default_prefix: str,
    time_budget_seconds: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Copy the outputs to S3 and record COMPLETED. Safe to repeat: keys are deterministic.

    ``time_budget_seconds`` bounds all downloads (the function's remaining time, less a margin),
    so a slow CDN ends as a retryable error instead of a Lambda timeout.
    """
    job_id = str(state["jobId"])
    bind_job(job_id, task_id=state.get("taskId"))
    poll = state.get("poll") or {}
    record = store.get(job_id)
    if record is None:
        raise JobRecordMissing(f"no record for job {job_id}")
    if record.get("status") == JobStatus.COMPLETED:
        logger.info("outputs already stored (repeat call)")
        return {"jobId": job_id, "status": JobStatus.COMPLETED, "outputs": record.get("outputs", [])}
    if record.get("status") in records.TERMINAL:  # e.g. CANCELLED while the task ran: nothing to store
        logger.info("job already finished; outputs not copied", extra={"status": record.get("status")})
        return {"jobId": job_id, "status": record.get("status"), "outputs": []}
    request = JobRequest.from_record(record.get("request") or {"jobId": job_id})
    output_urls = [str(u) for u in poll.get("outputUrls") or []]
    credits_used = poll.get("creditsUsed")
    if credits_used is None:
        credits_used = record.get("creditsUsed")
    polls = int(state.get("polls") or 0)
    if not output_urls:
        result = store.mark_failed(
            job_id,
            source="provider",
            code="EMPTY_RESULT",
            message="the provider reported success with no output",
            credits_refunded=int(poll.get("creditsRefunded") or 0),
            polls=polls,
            now=now,
        )
        count(JOBS_FAILED)
        return_refund(store, result.record)
        logger.error("completed task has no outputs; recorded FAILED")
        return {"jobId": job_id, "status": result.status, "outputs": []}
    try:
        stored = copier.copy_outputs(
            job_id,
            request.output_prefix or default_prefix,
            output_urls,
            kind=str(state.get("kind") or request.kind),
            metadata=request.metadata,
            time_budget_seconds=time_budget_seconds,
            finished_elsewhere=lambda: _status(store, job_id) == JobStatus.COMPLETED,
        )
    except TransientCopyError as error:
        raise ProviderTransientError(redact(str(error))) from None
    except OutputCopyError:
        logger.exception("output copy failed permanently")
        raise
    moment = time.time() if now is None else now
    outputs = [output.to_record() for output in stored]
    result = store.mark_completed(
        job_id,
        outputs,
        credits_used=credits_used,
        credits_refunded=int(poll.get("creditsRefunded") or 0),
        polls=polls,
        latency=_latency(record, poll, moment),
        now=moment,
    )
    return_refund(store, result.record)
    if result.applied:
        count(JOBS_COMPLETED)
        total = (result.record or {}).get("latency", {}).get("totalSeconds")
        if total is not None:
            seconds(JOB_LATENCY_SECONDS, float(total))
        logger.info("job completed", extra={"outputs": len(outputs)})
    else:
        logger.warning("COMPLETED not recorded", extra={"reason": result.reason})
    return {"jobId": job_id, "status": result.status, "outputs": outputs}


def return_refund(store: JobStore, record: Mapping[str, Any] | None) -> None:
    """Give the job's budget day the refund its record shows (once; also on a repeated call,
    when an earlier one recorded the status but stopped before this)."""
    if record is None or credit_budget.refund_due(record) is None:
        return
    result = store.settle_refund(record)
    logger.info("refund returned to the credit budget", extra={"applied": result.applied})


def _status(store: JobStore, job_id: str) -> str | None:
    record = store.get(job_id)
    return None if record is None else str(record.get("status"))


def _error_parts(error: Any) -> tuple[str, str]:
    """(code, message) from a Catch result ``{"Error", "Cause"}``; a Lambda Cause is JSON."""
    if not isinstance(error, Mapping):
        return "States.Unknown", "no error details"
    code = str(error.get("Error") or "States.Unknown")
    cause = error.get("Cause")
    message = cause if isinstance(cause, str) else json.dumps(cause) if cause is not None else ""
    try:
        parsed = json.loads(message) if message.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("errorMessage"):
        message = str(parsed["errorMessage"])
        code = str(parsed.get("errorType") or code) if code == "States.TaskFailed" else code
    return code[:128], redact(message, max_chars=1000)


# The outcomes after which a refund may still be due: a provider failure, and each recheck.
REFUND_OUTCOMES = ("FAILED", "REFUND")


def finalize_step(
    state: FinalizeInput,
    store: JobStore,
    now: float | None = None,
    refund_recheck_delays: Sequence[int] = (),
) -> FinalizeResult:
    """Record the terminal state for outcome FAILED (provider), TIMED_OUT or ERROR (pipeline), or
    (outcome REFUND) the refund a later snapshot of a FAILED job's task shows.

    ``refundRecheckAfterSeconds`` in the result (0: none) tells the state machine to read a FAILED
    job's task again that much later, for a refund no snapshot has shown yet."""
    job_id = str(state["jobId"])
    bind_job(job_id, task_id=state.get("taskId"))
    outcome = str(state.get("outcome") or ("ERROR" if "error" in state else ""))
    raw_poll = state.get("poll")
    poll: Mapping[str, Any] = raw_poll if isinstance(raw_poll, Mapping) else {}
    polls = state.get("polls")
    polls = int(polls) if isinstance(polls, int | float) else None
    checks = 0
    if outcome == "FAILED":
        refunded = int(poll.get("creditsRefunded") or 0)
        result = store.mark_failed(
            job_id,
            source="provider",
            code=str(poll.get("errorCode") or "PROVIDER_FAILED"),
            message=redact(str(poll.get("errorMessage") or "the provider failed the task"), max_chars=1000),
            credits_refunded=refunded,
            polls=polls,
            now=now,
        )
        if result.applied:
            count(JOBS_FAILED)
            count(CREDITS_REFUNDED, refunded)
        return_refund(store, result.record)
    elif outcome == "REFUND":
        checks = int(state.get("refundChecks") or 0) + 1
        result = record_late_refund(store, job_id, int(poll.get("creditsRefunded") or 0), now=now)
    elif outcome == "TIMED_OUT":
        result = store.mark_timed_out(
            job_id, polls=polls, message="the provider did not finish before the job's deadline", now=now
        )
        if result.applied:
            count(JOBS_TIMED_OUT)
    elif outcome == "ERROR":
        code, message = _error_parts(state.get("error"))
        result = store.mark_failed(
            job_id, source="pipeline", code=code, message=message, polls=polls, now=now
        )
        if result.applied:
            count(JOBS_FAILED)
    else:
        raise ValueError(
            f"finalize: unknown outcome {outcome!r} (expected FAILED, REFUND, TIMED_OUT or ERROR)"
        )
    recheck = (
        refund_recheck_after(result.record, checks, refund_recheck_delays)
        if outcome in REFUND_OUTCOMES
        else 0
    )
    logger.info(
        "job finalized",
        extra={
            "outcome": outcome,
            "applied": result.applied,
            "status": result.status,
            "refundRecheck": recheck,
        },
    )
    return FinalizeResult(
        jobId=job_id,
        status=result.status,
        applied=result.applied,
        reason=result.reason,
        refundRecheckAfterSeconds=recheck,
        refundChecks=checks,
    )


def refund_recheck_after(record: Mapping[str, Any] | None, checks: int, delays: Sequence[int]) -> int:
    """Seconds before reading the task of a provider-FAILED job again, for a refund no snapshot
    has shown yet ("refunded (or will be shortly)"), after ``checks`` rechecks; 0 when there is
    nothing to wait for: another status or a pipeline failure, nothing charged, the refund
    recorded, or every delay used."""
    if record is None or record.get("status") != JobStatus.FAILED:
        return 0
    if (record.get("error") or {}).get("source") != "provider":
        return 0
    used = int(record.get("creditsUsed") or 0)
    if used <= 0 or int(record.get("creditsRefunded") or 0) >= used or checks >= len(delays):
        return 0
    return int(delays[checks])


def record_late_refund(
    store: JobStore, job_id: str, refunded: int, now: float | None = None
) -> TransitionResult:
    """A FAILED job's refund on a later snapshot: ``creditsRefunded`` on the record and the new
    part back to its budget day, in one conditional write (``JobStore.settle_refund``)."""
    record = store.get(job_id)
    if record is None:
        raise JobRecordMissing(f"no record for job {job_id}")
    before = int(record.get("creditsRefunded") or 0)
    if record.get("status") != JobStatus.FAILED or refunded <= before:
        return TransitionResult(False, record.get("status"), record, "no new refund")
    result = store.settle_refund(record, credits_refunded=refunded, now=now)
    if result.applied:
        count(CREDITS_REFUNDED, refunded - before)
        logger.info("late refund recorded", extra={"creditsRefunded": refunded})
    return result
