"""Intake: one SQS job message → validated, recorded, claimed, submitted once, execution started.

Implements the intake rules of docs/architecture.md. The outcome says whether SQS may
delete the message (``ack``) or must redeliver it (``retry``); every branch is logged
and leaves the record in a state that explains it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from imagejobs import budget as credit_budget
from imagejobs import catalog, jobs
from imagejobs import store as records
from imagejobs.config import ExecutionSettings, IntakeSettings
from imagejobs.execution_state import ExecutionState
from imagejobs.first_poll import FirstPollPolicy
from imagejobs.observability import (
    BUDGET_WAITS,
    CREDITS_USED,
    JOBS_REJECTED,
    JOBS_SUBMITTED,
    SUBMIT_UNKNOWN,
    bind_job,
    count,
    logger,
    redact,
)
from imagejobs.provider import (
    OutcomeUnknown,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Submission,
    TaskSubmitter,
)
from imagejobs.secrets import SecretNotConfigured
from imagejobs.store import BatchLine, JobStatus, JobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

# requeue: the message is sent again with a delay and this receive acknowledged (a job waiting for
# budget must not use up the queue's maxReceiveCount and end in the DLQ).
Action = Literal["ack", "retry", "requeue"]
# A duplicate delivery that finds the job claimed by another worker looks again this soon: the claim
# normally ends in well under a second, and the queue's own visibility timeout is many minutes.
CLAIM_CONTENTION_RETRY_SECONDS = 10.0
# The budget reservation a claim holds, as its record stores it (None: nothing to settle).
HeldReservation = Mapping[str, Any] | None


@dataclass(frozen=True)
class IntakeOutcome:
    action: Action
    reason: str
    job_id: str | None = None
    status: str | None = None  # the record's status when the message was handled
    task_id: str | None = None
    # For a retry: when to look again. None keeps the queue's visibility timeout (provider trouble
    # backs off for long); a claim held by another worker or a 429's Retry-After asks for sooner.
    retry_after_seconds: float | None = None
    # For a requeue: the body to send again (it names the job id) and its delay.
    requeue_body: str | None = None

    @property
    def ack(self) -> bool:
        return self.action == "ack"


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN StartExecution gives an execution of this name (deterministic)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def execution_input(
    job_id: str,
    task_id: str,
    kind: str,
    settings: ExecutionSettings,
    submitted_at: float,
    first_poll_seconds: int | None = None,
) -> ExecutionState:
    interval = settings.poll_interval_seconds
    payload = ExecutionState(
        jobId=job_id,
        taskId=task_id,
        kind=kind,
        pollIntervalSeconds=interval,
        deadline=round(submitted_at + settings.max_wait_seconds(kind), 3),
        polls=0,
    )
    # The state machine's Wait lasts pollIntervalSeconds before every poll: a longer first wait
    # (FirstPollAfter) goes there, with the steady interval beside it for the first poll to restore
    # (workflow.poll_step). No new state: the default costs no extra transition, and executions
    # of either definition accept either input during a deploy.
    if first_poll_seconds is not None and first_poll_seconds != interval:
        payload["pollIntervalSeconds"] = first_poll_seconds
        payload["steadyPollIntervalSeconds"] = interval
    # EXPRESS executions stop at 5 minutes: the poll step hands over to a fresh execution after
    # this long (statemachine/job.asl.json, HandOver); 0 = off.
    handover_after = settings.handover_after_seconds
    if handover_after > 0:
        payload["handoverAfterSeconds"] = handover_after
        payload["segmentStartedAt"] = round(submitted_at, 3)
    return payload


def start_execution(
    sfn: SFNClient, settings: ExecutionSettings, job_id: str, payload: Mapping[str, Any]
) -> str:
    """StartExecution named after the job; an existing execution of that name counts as success."""
    try:
        response = sfn.start_execution(
            stateMachineArn=settings.state_machine_arn, name=job_id, input=json.dumps(payload)
        )
        return str(response["executionArn"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            logger.info("execution already exists", extra={"execution_name": job_id})
            return execution_arn(settings.state_machine_arn, job_id)
        raise


def _ensure_execution(
    sfn: SFNClient,
    settings: ExecutionSettings,
    job_id: str,
    task_id: str,
    payload: Mapping[str, Any],
    done: str,
) -> IntakeOutcome:
    """Start the job's loop; ack with `done`, or retry when Step Functions keeps failing (throttled,
    5xx, no response after botocore's retries): SUBMITTED is recorded, so a redelivery only starts
    the execution, and the retry outcome is what lets the last receive note the DLQ on the record."""
    try:
        start_execution(sfn, settings, job_id, payload)
    except (ClientError, BotoCoreError):
        logger.exception("StartExecution failed; SQS will redeliver and restart it")
        return IntakeOutcome("retry", "StartExecution failed", job_id, JobStatus.SUBMITTED, task_id)
    return IntakeOutcome("ack", done, job_id, JobStatus.SUBMITTED, task_id)


def _restart(record: Mapping[str, Any], *, sfn: SFNClient, settings: ExecutionSettings) -> IntakeOutcome:
    """Duplicate delivery of a SUBMITTED job: make sure its execution runs, then ack."""
    job_id = str(record["jobId"])
    task_id = str(record["taskId"])
    submitted_at = record.get("submittedAt") or record.get("updatedAt")
    started = records.parse_iso(submitted_at) if isinstance(submitted_at, str) else time.time()
    payload = execution_input(job_id, task_id, str(record.get("kind") or "image"), settings, started)
    return _ensure_execution(
        sfn, settings, job_id, task_id, payload, "duplicate of a SUBMITTED job; execution ensured"
    )


def _rejected_job_id(document: Any, message_id: str) -> str:
    candidate = document.get("jobId") if isinstance(document, Mapping) else None
    if isinstance(candidate, str) and jobs.JOB_ID_RE.match(candidate):
        return candidate
    return message_id if jobs.JOB_ID_RE.match(message_id) else "invalid-" + message_id[:60]


def _document(body: str | bytes | Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The message as a JSON object, or None (not JSON, or not an object)."""
    document: Any = body
    if not isinstance(body, Mapping):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
    return document if isinstance(document, Mapping) else None


def claimed_batch_line(body: str | bytes | Mapping[str, Any]) -> BatchLine | None:
    """The batch line an invalid message names (``imagejobs submit --file`` sets both), if well formed:
    its REJECTED record still counts in its batch, which otherwise would never complete."""
    document = _document(body) or {}
    batch_id, line = document.get("batchId"), document.get("batchLine")
    if jobs.job_id_problem(batch_id) is not None or isinstance(line, bool) or not isinstance(line, int):
        return None
    return BatchLine(str(batch_id), line) if 1 <= line <= jobs.MAX_BATCH_LINE else None


def partial_request(body: str | bytes | Mapping[str, Any]) -> Mapping[str, Any] | None:
    """What can be kept of an invalid message for the REJECTED record (small, known fields only)."""
    document = _document(body)
    if document is None:
        return None
    kept = {}
    for name in ("jobId", "model", "prompt", "aspectRatio"):
        value = document.get(name)
        if isinstance(value, str):
            clipped = value[:2000]
            try:
                clipped.encode("utf-8")
            except UnicodeEncodeError:  # an unpaired surrogate: DynamoDB cannot store it
                continue
            kept[name] = clipped
    return kept


def _batch_line_clash(request: jobs.JobRequest, record: Mapping[str, Any]) -> BatchLine | None:
    """The batch line whose job id is already another job's (a redelivery is not a clash)."""
    if request.batch_id is None or request.batch_line is None:
        return None
    line = BatchLine(request.batch_id, request.batch_line)
    return None if BatchLine.of(record) == line else line


def _reject_batch_clash(
    store: JobStore, request: jobs.JobRequest, line: BatchLine, record: Mapping[str, Any], at: float
) -> IntakeOutcome:
    """A batch line naming a job id that another job has: the line still gets its record (the
    batch's results list every line), REJECTED under the line's own id."""
    owner = BatchLine.of(record)
    used_by = (
        f"batch {owner.batch_id} line {owner.line}" if owner else f"a job created {record.get('createdAt')}"
    )
    errors = {"jobId": [f"{request.job_id} is already used by another job ({used_by})"]}
    bind_job(line.default_job_id)
    result = store.put_rejected(
        line.default_job_id,
        errors,
        request={"jobId": request.job_id, "prompt": request.prompt[:2000], "model": request.model},
        message=f"invalid job: jobId: {errors['jobId'][0]}",
        batch=line,
        now=at,
    )
    if result.applied:
        count(JOBS_REJECTED)
    logger.warning("batch line names a job id already in use", extra={"field_errors": errors})
    return IntakeOutcome("ack", "rejected: job id already in use", line.default_job_id, JobStatus.REJECTED)


@dataclass(frozen=True)
class _Intake:
    """What every intake step needs: the adapters, the settings and the clock."""

    store: JobStore
    provider: TaskSubmitter
    sfn: SFNClient
    s3: S3Client
    settings: IntakeSettings
    lease_seconds: float
    first_poll: FirstPollPolicy | None
    now: Callable[[], float]


def handle_job_message(
    body: str | bytes | Mapping[str, Any],
    message_id: str,
    *,
    store: JobStore,
    provider: TaskSubmitter,
    sfn: SFNClient,
    s3: S3Client,
    settings: IntakeSettings,
    lease_seconds: float = 900.0,
    first_poll: FirstPollPolicy | None = None,
    now: Callable[[], float] = time.time,
    parse: Callable[..., jobs.JobRequest] = jobs.parse_job,
) -> IntakeOutcome:
    """Parse, record RECEIVED, claim, submit once, start the loop: each step either hands the job on
    or ends with the outcome that explains where it stopped."""
    intake = _Intake(store, provider, sfn, s3, settings, lease_seconds, first_poll, now)
    try:
        request = parse(body, message_id, settings=settings)
    except jobs.JobValidationError as invalid:
        return _reject_invalid(intake, invalid, body, message_id)
    bind_job(request.job_id, model=request.model, kind=request.kind)
    received = _record_received(intake, request)
    if isinstance(received, IntakeOutcome):
        return received
    claimed = _claim(intake, received, body)
    if isinstance(claimed, IntakeOutcome):
        return claimed
    sent = _submit(intake, received, claimed.held)
    if isinstance(sent, IntakeOutcome):
        return sent
    return _start_loop(intake, received, sent, claimed.held)


@dataclass(frozen=True)
class _Claimed:
    """The submit claim is ours, with the credits it holds in the budget."""

    held: HeldReservation


@dataclass(frozen=True)
class _Sent:
    """The provider accepted the job: its task, and when the submission began (for submitMs)."""

    submission: Submission
    started_at: float


def _reject_invalid(
    intake: _Intake, invalid: jobs.JobValidationError, body: str | bytes | Mapping[str, Any], message_id: str
) -> IntakeOutcome:
    """Record REJECTED with the field errors (under the line's own id if the job id is another job's,
    so its batch completes); an existing record is left as it is."""
    store, now = intake.store, intake.now
    partial = partial_request(body)
    job_id = invalid.job_id or _rejected_job_id(partial, message_id)
    line = claimed_batch_line(body)
    bind_job(job_id)
    result = store.put_rejected(
        job_id, invalid.field_errors, request=partial, message=str(invalid), batch=line, now=now()
    )
    if not result.applied and line is not None and BatchLine.of(result.record or {}) != line:
        job_id = line.default_job_id
        bind_job(job_id)
        result = store.put_rejected(
            job_id, invalid.field_errors, request=partial, message=str(invalid), batch=line, now=now()
        )
    if result.applied:
        count(JOBS_REJECTED)
        logger.warning("job rejected", extra={"field_errors": invalid.field_errors})
        return IntakeOutcome("ack", "rejected: invalid message", job_id, JobStatus.REJECTED)
    logger.warning(
        "invalid message for an existing job id; record left unchanged",
        extra={"field_errors": invalid.field_errors, "existing_status": result.status},
    )
    return IntakeOutcome("ack", "invalid duplicate of an existing job", job_id, result.status)


def _record_received(intake: _Intake, request: jobs.JobRequest) -> jobs.JobRequest | IntakeOutcome:
    """Record RECEIVED; for a job already recorded, decide from its record: the request to go on
    with (the recorded one: the first message for a job id defines the job) or where it ends."""
    hint = catalog.model_hint(request.model)
    if hint:
        logger.warning("unknown model passed to the provider", extra={"hint": hint})
    created = intake.store.create_received(
        request.job_id, request.to_record(), now=intake.now(), model_hint=hint
    )
    if created.applied:
        return request
    record = created.record or {}
    status = created.status
    clash = _batch_line_clash(request, record)
    if clash is not None:
        return _reject_batch_clash(intake.store, request, clash, record, intake.now())
    if status in records.TERMINAL:
        logger.info("duplicate of a finished job; acknowledged", extra={"status": status})
        return IntakeOutcome("ack", f"duplicate: job already {status}", request.job_id, status)
    if status == JobStatus.SUBMITTED:
        return _restart(record, sfn=intake.sfn, settings=intake.settings)
    if status == JobStatus.SUBMITTING:
        return _held_elsewhere(intake, request.job_id, record)
    logger.info("job already RECEIVED (earlier attempt released its claim); continuing")
    stored = record.get("request")
    if isinstance(stored, Mapping) and stored != request.to_record():
        logger.warning("redelivered job differs from the recorded request; using the recorded one")
        return jobs.JobRequest.from_record(stored)
    return request


def _held_elsewhere(intake: _Intake, job_id: str, record: Mapping[str, Any]) -> IntakeOutcome:
    """A SUBMITTING record: another worker's live claim (look again soon), or a claim whose lease ran
    out mid-submit, which may have been charged: SUBMIT_UNKNOWN, never submitted again."""
    lease = float(record.get("leaseExpiresAt") or 0)
    if lease > intake.now():
        logger.info("another worker is submitting this job; retry later", extra={"lease": lease})
        return IntakeOutcome(
            "retry",
            "another worker holds the submit claim",
            job_id,
            JobStatus.SUBMITTING,
            retry_after_seconds=CLAIM_CONTENTION_RETRY_SECONDS,
        )
    reason = "an earlier submit attempt did not finish within its lease; it may have been charged"
    marked = intake.store.mark_submit_unknown(
        job_id, reason, held=credit_budget.held_reservation(record), now=intake.now()
    )
    if marked.applied:
        count(SUBMIT_UNKNOWN)
    elif marked.status not in records.TERMINAL:
        # The earlier attempt ended meanwhile (e.g. released its claim): acking now would lose
        # the job, so let SQS redeliver and decide again from the fresh record.
        logger.info("stale claim ended meanwhile; retry later", extra={"status": marked.status})
        return IntakeOutcome("retry", f"record became {marked.status} meanwhile", job_id, marked.status)
    logger.error("stale submit claim; job marked SUBMIT_UNKNOWN", extra={"applied": marked.applied})
    return IntakeOutcome("ack", "stale claim: SUBMIT_UNKNOWN", job_id, marked.status)


def _claim(
    intake: _Intake, request: jobs.JobRequest, body: str | bytes | Mapping[str, Any]
) -> _Claimed | IntakeOutcome:
    """Take the submit claim, reserving the job's credits in the day's and its batch's budget in the
    same transaction; over budget, the job waits; a claim another worker won decides its own fate."""
    settings, job_id = intake.settings, request.job_id
    reservation = credit_budget.reservation_for(
        request.model,
        intake.now(),
        limit=settings.credit_budget_per_day,
        batch=request.batch_id,
        batch_limit=settings.credit_budget_per_batch,
    )
    claim = intake.store.claim_for_submit(
        job_id, intake.lease_seconds, reservation=reservation, now=intake.now()
    )
    if claim.over_budget and reservation is not None:
        return wait_for_budget(
            intake.store, body, job_id, reservation, claim.over_budget, settings, now=intake.now
        )
    if claim.applied:
        return _Claimed(credit_budget.held_reservation(claim.record))
    logger.info("lost the submit claim race", extra={"status": claim.status})
    if claim.status in records.TERMINAL:
        return IntakeOutcome("ack", f"job already {claim.status}", job_id, claim.status)
    if claim.status == JobStatus.SUBMITTED and claim.record:
        return _restart(claim.record, sfn=intake.sfn, settings=settings)
    return IntakeOutcome(
        "retry",
        f"claim not acquired ({claim.reason})",
        job_id,
        claim.status,
        retry_after_seconds=CLAIM_CONTENTION_RETRY_SECONDS,
    )


def _submit(intake: _Intake, request: jobs.JobRequest, held: HeldReservation) -> _Sent | IntakeOutcome:
    """Submit exactly once per claim. Nothing sent (presigning failed, a classified error before
    charging): release the claim for a retry. Possibly sent: SUBMIT_UNKNOWN, never resubmitted."""
    store, now, job_id = intake.store, intake.now, request.job_id
    try:
        presign = jobs.s3_presigner(intake.s3, intake.settings.presign_ttl_seconds)
        provider_body = request.to_provider_body(jobs.resolve_input_urls(request, presign))
    except Exception as exc:  # nothing was sent: release and let SQS retry
        error = {"code": "PRESIGN_FAILED", "message": redact(str(exc))}
        store.release_claim(job_id, error, held=held, now=now())
        logger.exception("could not presign input images; claim released")
        return IntakeOutcome("retry", "presigning inputs failed", job_id, JobStatus.RECEIVED)
    started_at = now()
    try:
        if request.kind == "video":
            return _Sent(intake.provider.submit_video(provider_body), started_at)
        return _Sent(intake.provider.submit_image(provider_body), started_at)
    except ProviderRejected as rejected:
        # Provider messages may echo the presigned input URLs: keep them without signatures.
        field_errors = {name: [redact(m) for m in msgs] for name, msgs in rejected.field_errors.items()}
        result = store.mark_rejected(
            job_id, field_errors, message=redact(str(rejected)), held=held, now=now()
        )
        count(JOBS_REJECTED)
        logger.warning("provider rejected the job", extra={"field_errors": field_errors})
        return IntakeOutcome("ack", "rejected by the provider (400)", job_id, result.status)
    except OutcomeUnknown as unknown:
        result = store.mark_submit_unknown(job_id, redact(str(unknown)), held=held, now=now())
        count(SUBMIT_UNKNOWN)
        logger.error("submission outcome unknown; never resubmitted", extra={"error": redact(str(unknown))})
        return IntakeOutcome("ack", "submission outcome unknown", job_id, result.status)
    except ProviderError as failure:
        return _release_for_retry(intake, job_id, failure, held)
    except Exception as exc:
        # Not a classified provider error: the request may have gone out. Never resubmit.
        result = store.mark_submit_unknown(
            job_id, f"unexpected {type(exc).__name__} while submitting", held=held, now=now()
        )
        count(SUBMIT_UNKNOWN)
        logger.exception("unexpected error while submitting; job marked SUBMIT_UNKNOWN")
        return IntakeOutcome("ack", "unexpected submit error: SUBMIT_UNKNOWN", job_id, result.status)


def _release_for_retry(
    intake: _Intake, job_id: str, failure: ProviderError, held: HeldReservation
) -> IntakeOutcome:
    """A provider error before charging: release the claim; SQS redelivers (after Retry-After for a 429)."""
    # A missing API key surfaces as "unreachable" from the client; keep the actionable message.
    cause = failure.__cause__
    missing_key = isinstance(cause, SecretNotConfigured)
    detail = str(cause) if missing_key else str(failure)
    code = "SecretNotConfigured" if missing_key else type(failure).__name__
    error = {"code": code, "message": redact(detail)}
    intake.store.release_claim(job_id, error, held=held, now=intake.now())
    logger.warning("submit failed before charging; claim released for retry", extra={"error": error})
    return IntakeOutcome(
        "retry",
        f"provider error: {type(failure).__name__}",
        job_id,
        JobStatus.RECEIVED,
        retry_after_seconds=failure.retry_after if isinstance(failure, RateLimited) else None,
    )


def _start_loop(
    intake: _Intake,
    request: jobs.JobRequest,
    sent: _Sent,
    held: HeldReservation,
) -> IntakeOutcome:
    """Record SUBMITTED with the task id, then start the job's poll loop. A record that moved on
    meanwhile keeps the task id for reconciliation."""
    store, now, job_id, submission = intake.store, intake.now, request.job_id, sent.submission
    submitted_at = now()
    arn = execution_arn(intake.settings.state_machine_arn, job_id)
    bind_job(job_id, task_id=submission.task_id)
    marked = store.mark_submitted(
        job_id,
        submission.task_id,
        submission.credits_used,
        arn,
        submit_ms=round((submitted_at - sent.started_at) * 1000),
        held=held,
        now=submitted_at,
    )
    if not marked.applied:
        # The claim was lost (e.g. a stale-lease SUBMIT_UNKNOWN) while we held a real task: keep its id.
        store.note_task_on_unknown(job_id, submission.task_id, submission.credits_used, now=now())
        logger.error(
            "submitted, but the record moved on; task id kept for reconciliation",
            extra={"status": marked.status, "task_id": submission.task_id},
        )
        return IntakeOutcome("ack", f"record is {marked.status}", job_id, marked.status, submission.task_id)
    count(JOBS_SUBMITTED)
    count(CREDITS_USED, submission.credits_used or 0)
    logger.info(
        "job submitted", extra={"task_id": submission.task_id, "credits_used": submission.credits_used}
    )
    first_poll = intake.first_poll
    first_poll_seconds = None if first_poll is None else first_poll.seconds(request.model, request.kind)
    payload = execution_input(
        job_id, submission.task_id, request.kind, intake.settings, submitted_at, first_poll_seconds
    )
    return _ensure_execution(intake.sfn, intake.settings, job_id, submission.task_id, payload, "submitted")


def requeue_body(body: str | bytes | Mapping[str, Any], job_id: str) -> str:
    """The message to send again: the same job, its id made explicit (a message without ``jobId``
    takes the SQS message id, which the new message would not share)."""
    document = dict(body) if isinstance(body, Mapping) else json.loads(body)
    document["jobId"] = job_id
    return json.dumps(document, separators=(",", ":"))


def wait_for_budget(
    store: JobStore,
    body: str | bytes | Mapping[str, Any],
    job_id: str,
    reservation: credit_budget.Reservation,
    scope: credit_budget.BudgetScope,
    settings: IntakeSettings,
    *,
    now: Callable[[], float] = time.time,
) -> IntakeOutcome:
    """No room in the day's (``scope`` "day") or the batch's budget: nothing is submitted; the
    record says why, the BudgetWaits metric (and its alarm) counts it, and the message comes back
    after the recheck interval, or, for the day's budget, at the next UTC day if that is sooner (a
    batch's budget does not renew). The record's budgetWait is what JobEventsFunction publishes as
    "Job Waiting For Budget" (imagejobs.events), once per job and day."""
    moment = now()
    delay = float(settings.budget_recheck_seconds)
    if scope == "day":
        delay = min(delay, credit_budget.seconds_until_next_day(moment))
    fits = reservation.describe(scope)
    reason = f"waiting for credit budget: {reservation.credits} credits do not fit in {fits}"
    store.note_budget_wait(job_id, reason, reservation, now=moment)
    count(BUDGET_WAITS)
    logger.warning("over the credit budget; job waits", extra={"day": reservation.day, "delay": delay})
    return IntakeOutcome(
        "requeue",
        reason,
        job_id,
        JobStatus.RECEIVED,
        retry_after_seconds=delay,
        requeue_body=requeue_body(body, job_id),
    )


def note_last_receive(
    store: JobStore,
    outcome: IntakeOutcome,
    receive_count: int | None,
    max_receive_count: int,
    *,
    now: Callable[[], float] = time.time,
) -> bool:
    """A retry on the message's last allowed receive: the queue's redrive policy moves it to the
    DLQ, so say so on the record (``deadLettered``), which nothing else would ever change.

    Only for a job left RECEIVED (claim released) or SUBMITTED (its execution not started), and
    only while the record is still so; a job another worker holds decides its own fate."""
    if outcome.action != "retry" or outcome.job_id is None or max_receive_count <= 0 or receive_count is None:
        return False
    if receive_count < max_receive_count or outcome.status not in (JobStatus.RECEIVED, JobStatus.SUBMITTED):
        return False
    reason = f"{outcome.reason} (receive {receive_count} of {max_receive_count})"
    try:
        result = store.note_dead_lettered(
            outcome.job_id, reason, receive_count, statuses=[outcome.status], now=now()
        )
    except ClientError:
        logger.exception("could not note the dead-lettered message on the record")
        return False
    logger.error(
        "last receive failed; the message goes to the dead-letter queue",
        extra={"job_id": outcome.job_id, "receive_count": receive_count, "noted": result.applied},
    )
    return result.applied
