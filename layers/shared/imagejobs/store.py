"""The job record in DynamoDB (docs/records.md): conditional state transitions and status history.

Every transition is one conditional write naming the statuses it may start from, so
two workers can never both win, and terminal statuses are never overwritten. A
transition that does not apply returns ``TransitionResult(applied=False, ...)`` with
the current record instead of raising: repeats (SQS redelivery, Step Functions
retries) are normal.

Every write carries a fresh ``lastWriteId``. botocore resends a request whose connection broke
after DynamoDB had applied it (a reset, a timeout): the resent conditional write then fails its
own condition. A failed condition on a record whose ``lastWriteId`` is the one this call sent
means the first send was applied, so the call reports it applied (otherwise a claim would look
lost and a submitted job would never get its execution started).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

from imagejobs import budget as credit_budget
from imagejobs.budget import BudgetScope, CounterChange, Reservation


class JobStatus(StrEnum):
    """A job record's status (docs/architecture.md, "Job record"); stored as its name."""

    RECEIVED = "RECEIVED"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    REJECTED = "REJECTED"
    SUBMIT_UNKNOWN = "SUBMIT_UNKNOWN"
    CANCELLED = "CANCELLED"


# The one set of terminal statuses: the CLI, the local demo, the suites and the benches import it.
TERMINAL = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.TIMED_OUT,
        JobStatus.REJECTED,
        JobStatus.SUBMIT_UNKNOWN,
        JobStatus.CANCELLED,
    }
)
ACTIVE = (JobStatus.RECEIVED, JobStatus.SUBMITTING, JobStatus.SUBMITTED)
BY_STATUS_INDEX = "ByStatus"
WRITE_ID = "lastWriteId"


def iso(epoch_seconds: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-01-01T00:00:00.000Z (sorts as text)."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def to_dynamo(value: Any) -> Any:
    """DynamoDB-safe copy: floats become Decimal, tuples lists, empty strings stay."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """Plain-JSON copy of an item: Decimal becomes int or float, sets become sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(from_dynamo(v) for v in value)
    return value


@dataclass(frozen=True)
class TransitionResult:
    applied: bool
    status: str | None  # the record's status after the call (None: no record)
    record: dict[str, Any] | None
    reason: str = ""
    # A claim refused because a credit budget has no room for its reservation: which one, "day"
    # (the UTC day's) or "batch" (its batch's); None otherwise.
    over_budget: BudgetScope | None = None


@dataclass(frozen=True)
class BatchLine:
    """Where a job came from in its batch: the record's ``batchId`` and ``batchLine``."""

    batch_id: str
    line: int

    @property
    def default_job_id(self) -> str:
        """The line's job id when it names none (and the id of its REJECTED record on a clash)."""
        return f"{self.batch_id}-{self.line}"

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> BatchLine | None:
        batch_id, line = record.get("batchId"), record.get("batchLine")
        return cls(str(batch_id), int(line)) if batch_id and line is not None else None


LOST_RESPONSE = "applied by an earlier send of this write (its response was lost)"


def _write_id() -> str:
    return uuid.uuid4().hex


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


_DESERIALIZER = TypeDeserializer()


def _item_at_failure(error: ClientError) -> dict[str, Any] | None:
    """The record as the failed condition saw it (ReturnValuesOnConditionCheckFailure=ALL_OLD);
    None when there was none. One round trip, and no later write can slip in before the read."""
    item: Any = error.response.get("Item")  # DynamoDB's error alone carries it
    if not isinstance(item, Mapping) or not item:
        return None
    return dict(from_dynamo({name: _DESERIALIZER.deserialize(value) for name, value in item.items()}))


def _cancelled_by(error: ClientError) -> list[str] | None:
    """Each transaction item's cancellation code, or None when the error is not a cancellation."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = error.response.get("CancellationReasons") or []
    return [str(reason.get("Code") or "None") for reason in reasons]


class JobStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # -- reads -------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"jobId": job_id}, ConsistentRead=True).get("Item")
        return from_dynamo(item) if item else None

    def list_by_status(
        self, status: str, limit: int = 50, since: str | float | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``since`` (ISO-8601 or epoch seconds) bounds ``updatedAt`` from below."""
        condition = "#status = :status"
        values: dict[str, Any] = {":status": status}
        if since is not None:
            condition += " AND updatedAt >= :since"
            values[":since"] = iso(since) if isinstance(since, int | float) else since
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "IndexName": BY_STATUS_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        while len(items) < limit:
            page = self.table.query(Limit=limit - len(items), **kwargs)
            items.extend(from_dynamo(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items[:limit]

    def recent_generation_seconds(self, model: str, limit: int) -> list[float]:
        """The provider's generation time (``latency.providerSeconds``) of this model's jobs among
        the ``limit`` most recently COMPLETED, newest first. One bounded query: ``Limit`` caps the
        items read (and billed) before the model filter, so a busy table never costs more."""
        page = self.table.query(
            IndexName=BY_STATUS_INDEX,
            KeyConditionExpression="#status = :completed",
            FilterExpression="#model = :model AND attribute_exists(latency.providerSeconds)",
            ProjectionExpression="latency.providerSeconds",
            ExpressionAttributeNames={"#status": "status", "#model": "model"},
            ExpressionAttributeValues={":completed": JobStatus.COMPLETED, ":model": model},
            ScanIndexForward=False,
            Limit=limit,
        )
        latencies: list[Any] = [item["latency"] for item in page.get("Items", [])]
        return [float(latency["providerSeconds"]) for latency in latencies]

    # -- creation ----------------------------------------------------------
    def _put_new(self, item: dict[str, Any]) -> TransitionResult:
        item = {**item, WRITE_ID: _write_id()}
        try:
            self.table.put_item(
                Item=to_dynamo(item),
                ConditionExpression="attribute_not_exists(jobId)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            current = _item_at_failure(error)
            status = current.get("status") if current else None
            if current is not None and current.get(WRITE_ID) == item[WRITE_ID]:
                return TransitionResult(True, status, current, LOST_RESPONSE)
            return TransitionResult(False, status, current, f"record already exists ({status})")
        return TransitionResult(True, item["status"], item)

    def create_received(
        self,
        job_id: str,
        request: Mapping[str, Any],
        *,
        now: float | None = None,
        detail: str | None = None,
        model_hint: str | None = None,
    ) -> TransitionResult:
        at = iso(time.time() if now is None else now)
        entry: dict[str, Any] = {"status": JobStatus.RECEIVED, "at": at}
        if detail:
            entry["detail"] = detail
        item: dict[str, Any] = {
            "jobId": job_id,
            "status": JobStatus.RECEIVED,
            "statusHistory": [entry],
            "createdAt": at,
            "updatedAt": at,
            "request": dict(request),
            "model": request.get("model"),
            "kind": request.get("kind"),
            "prompt": request.get("prompt"),
            # Top-level copies of the links, for selecting a batch's jobs.
            "batchId": request.get("batchId"),
            "batchLine": request.get("batchLine"),
            "retryOf": request.get("retryOf"),
            "submitAttempts": 0,
            "polls": 0,
            "modelHint": model_hint,
        }
        return self._put_new({k: v for k, v in item.items() if v is not None})

    def put_rejected(
        self,
        job_id: str,
        field_errors: Mapping[str, Sequence[str]],
        *,
        request: Mapping[str, Any] | None = None,
        message: str = "the job message failed validation",
        upload: Mapping[str, Any] | None = None,
        batch: BatchLine | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """Record a message that failed our validation, unless a record with this id exists.

        ``upload`` ({bucket, key, uri}) names the S3 upload the job was made from (S3 intake);
        ``batch`` the batch line it was read from."""
        at = iso(time.time() if now is None else now)
        item: dict[str, Any] = {
            "jobId": job_id,
            "status": JobStatus.REJECTED,
            "statusHistory": [{"status": JobStatus.REJECTED, "at": at, "detail": message}],
            "createdAt": at,
            "updatedAt": at,
            "error": {
                "source": "validation",
                "code": "VALIDATION_FAILED",
                "message": message,
                "fieldErrors": {k: list(v) for k, v in field_errors.items()},
            },
        }
        if request is not None:
            item["request"] = dict(request)
            for name in ("model", "kind", "prompt"):
                if isinstance(request.get(name), str):
                    item[name] = request[name]
        if upload is not None:
            item["upload"] = dict(upload)
        if batch is not None:
            item["batchId"], item["batchLine"] = batch.batch_id, batch.line
        return self._put_new(item)

    # -- transitions -------------------------------------------------------
    def _transition(
        self,
        job_id: str,
        to_status: str | None,
        from_statuses: Iterable[str],
        *,
        now: float | None,
        set_values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        add: Mapping[str, int] | None = None,
        detail: str | None = None,
        extra_condition: tuple[str, Mapping[str, Any]] | None = None,
        budget: CounterChange | None = None,
        reservation: Reservation | None = None,
    ) -> TransitionResult:
        """One conditional update of the job; with ``budget``, in one transaction with that change
        to the day's budget counters (refused, ``over_budget``, if ``reservation`` does not fit)."""
        at = iso(time.time() if now is None else now)
        sources = list(from_statuses)
        write_id = _write_id()
        names: dict[str, str] = {"#status": "status", "#write": WRITE_ID}
        values: dict[str, Any] = {":now": at, ":write": write_id}
        sets = ["updatedAt = :now", "#write = :write"]
        if to_status is not None:
            entry: dict[str, Any] = {"status": to_status, "at": at}
            if detail:
                entry["detail"] = detail[:500]
            values[":to"] = to_status
            values[":history"] = [entry]
            values[":empty"] = []
            sets.append("#status = :to")
            sets.append("statusHistory = list_append(if_not_exists(statusHistory, :empty), :history)")
        for index, (name, value) in enumerate((set_values or {}).items()):
            names[f"#s{index}"] = name
            values[f":s{index}"] = to_dynamo(value)
            sets.append(f"#s{index} = :s{index}")
        expression = "SET " + ", ".join(sets)
        removals = []
        for index, name in enumerate(remove):
            names[f"#r{index}"] = name
            removals.append(f"#r{index}")
        if removals:
            expression += " REMOVE " + ", ".join(removals)
        if add:
            adds = []
            for index, (name, amount) in enumerate(add.items()):
                names[f"#a{index}"] = name
                values[f":a{index}"] = amount
                adds.append(f"#a{index} :a{index}")
            expression += " ADD " + ", ".join(adds)
        placeholders = []
        for index, source in enumerate(sources):
            values[f":from{index}"] = source
            placeholders.append(f":from{index}")
        condition = f"attribute_exists(jobId) AND #status IN ({', '.join(placeholders)})"
        if extra_condition is not None:
            condition += f" AND ({extra_condition[0]})"
            values.update(to_dynamo(dict(extra_condition[1])))
        update: dict[str, Any] = {
            "Key": {"jobId": job_id},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if budget is not None and not budget.is_empty():
            return self._transact(job_id, update, budget, reservation, at, write_id, to_status, sources)
        try:
            response = self.table.update_item(
                **update, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            return self._not_applied(_item_at_failure(error), write_id, to_status, sources)
        record = from_dynamo(response.get("Attributes", {}))
        return TransitionResult(True, record.get("status"), record)

    def _transact(
        self,
        job_id: str,
        update: Mapping[str, Any],
        change: CounterChange,
        reservation: Reservation | None,
        at: str,
        write_id: str,
        to_status: str | None,
        sources: Sequence[str],
    ) -> TransitionResult:
        scope = None if reservation is None else reservation.never_fits()
        if scope is not None:  # dearer than the whole budget
            return self._over_budget(self.get(job_id), scope)
        # The day's counters, then the batch's (a job of a batch with a batch budget): the order of
        # the cancellation reasons below.
        day_threshold = None if reservation is None else reservation.threshold
        counters = [_counters(credit_budget.budget_key(change.day), change, at, day_threshold)]
        if change.batch is not None:
            threshold = None if reservation is None else reservation.batch_threshold
            counters.append(_counters(credit_budget.batch_budget_key(change.batch), change, at, threshold))
        try:
            # The resource's client takes plain Python values (boto3 injects the table's
            # serialisation into it); its stubs describe the low-level client's AttributeValues.
            self.table.meta.client.transact_write_items(
                TransactItems=[{"Update": self._transaction_item(item)} for item in [update, *counters]]  # type: ignore[typeddict-item]
            )
        except ClientError as error:
            codes = _cancelled_by(error)
            if codes is None:
                raise
            if codes[:1] == ["ConditionalCheckFailed"]:
                return self._not_applied(self.get(job_id), write_id, to_status, sources)
            current = self.get(job_id)
            if current is not None and current.get(WRITE_ID) == write_id:
                return TransitionResult(True, current.get("status"), current, LOST_RESPONSE)
            if reservation is not None and "ConditionalCheckFailed" in codes[1:]:
                scope = "day" if codes[1:2] == ["ConditionalCheckFailed"] else "batch"
                return self._over_budget(current, scope)
            raise  # a conflicting transaction or throttling: the caller's retry decides again
        current = self.get(job_id)
        return TransitionResult(True, (current or {}).get("status"), current)

    @staticmethod
    def _over_budget(current: dict[str, Any] | None, scope: BudgetScope) -> TransitionResult:
        """A claim refused: no room in the ``scope`` budget; the record as it is."""
        return TransitionResult(
            False, (current or {}).get("status"), current, f"over the {scope}'s budget", scope
        )

    def _transaction_item(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A Table.update_item request as a transaction item. The resource's client takes plain
        Python values, as the table does (boto3 injects the same serialisation into it)."""
        return {**request, "TableName": self.table.name}

    @staticmethod
    def _not_applied(
        current: dict[str, Any] | None, write_id: str, to_status: str | None, sources: Sequence[str]
    ) -> TransitionResult:
        """The job's condition failed on record `current`: applied by a lost earlier send, or why not."""
        if current is None:
            return TransitionResult(False, None, None, "no such job")
        status = current.get("status")
        if current.get(WRITE_ID) == write_id:
            return TransitionResult(True, status, current, LOST_RESPONSE)
        if status == to_status:
            reason = f"already {status}"
        elif status in TERMINAL:
            reason = f"record is {status} (terminal, never overwritten)"
        else:
            reason = f"record is {status}, expected {' or '.join(sources)}"
        return TransitionResult(False, status, current, reason)

    def claim_for_submit(
        self,
        job_id: str,
        lease_seconds: float,
        *,
        reservation: Reservation | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """RECEIVED → SUBMITTING; the lease (epoch seconds) tells others how long to keep off.

        With a ``reservation`` the claim and the reservation are one transaction: no room in the
        day's (or its batch's) budget means no claim (``over_budget``), and a job holds at most one
        reservation."""
        moment = time.time() if now is None else now
        values: dict[str, Any] = {"claimedAt": iso(moment), "leaseExpiresAt": moment + lease_seconds}
        change = None
        if reservation is not None:
            values["budget"] = {
                "day": reservation.day,
                "reserved": reservation.credits,
                "state": credit_budget.HELD,
            }
            if reservation.batch is not None:
                values["budget"]["batch"] = reservation.batch
            change = CounterChange(reservation.day, reserved=reservation.credits, batch=reservation.batch)
        return self._transition(
            job_id,
            JobStatus.SUBMITTING,
            [JobStatus.RECEIVED],
            now=moment,
            set_values=values,
            # A message redriven from the DLQ is being worked on again; a budget wait has ended.
            remove=["deadLettered", "budgetWait"],
            add={"submitAttempts": 1},
            budget=change,
            reservation=reservation,
        )

    def note_budget_wait(
        self, job_id: str, reason: str, reservation: Reservation, *, now: float | None = None
    ) -> TransitionResult:
        """A RECEIVED job waits for room in the day's or its batch's budget (status kept; the claim
        clears it)."""
        moment = time.time() if now is None else now
        wait: dict[str, Any] = {
            "at": iso(moment),
            "reason": reason[:500],
            "day": reservation.day,
            "credits": reservation.credits,
            "limit": reservation.limit,
        }
        if reservation.batch is not None:
            wait["batch"] = reservation.batch
            wait["batchLimit"] = reservation.batch_limit
        return self._transition(
            job_id, None, [JobStatus.RECEIVED], now=moment, set_values={"budgetWait": wait}
        )

    def settle_refund(
        self, record: Mapping[str, Any], *, credits_refunded: int | None = None, now: float | None = None
    ) -> TransitionResult:
        """Return to the job's budget day the part of ``creditsRefunded`` not returned before.

        With ``credits_refunded`` (a refund a later snapshot shows), record it as ``creditsRefunded``
        in the same write. Conditional on the record being the one read (``lastWriteId``), so a
        repeat or a concurrent call returns a refund once."""
        job_id = str(record["jobId"])
        values: dict[str, Any] = {}
        if credits_refunded is not None:
            record = {**record, "creditsRefunded": credits_refunded}
            values["creditsRefunded"] = credits_refunded
        change = credit_budget.refund_due(record)
        if change is not None:
            values["budget"] = {**record["budget"], "refunded": int(record.get("creditsRefunded") or 0)}
        if not values:
            return TransitionResult(False, record.get("status"), dict(record), "no refund due")
        return self._transition(
            job_id,
            None,
            [str(record.get("status"))],
            now=now,
            set_values=values,
            extra_condition=("#write = :seen", {":seen": record.get(WRITE_ID)}),
            budget=change,
        )

    def release_claim(
        self,
        job_id: str,
        error: Mapping[str, Any],
        *,
        held: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """SUBMITTING → RECEIVED after a submission that certainly charged nothing (the ``held``
        reservation goes back to the budget; the next claim reserves again)."""
        moment = time.time() if now is None else now
        values: dict[str, Any] = {"lastSubmitError": {**error, "at": iso(moment)}}
        values, change = _settle(values, held, None if held is None else credit_budget.release(held))
        return self._transition(
            job_id,
            JobStatus.RECEIVED,
            [JobStatus.SUBMITTING],
            now=moment,
            set_values=values,
            remove=["leaseExpiresAt"],
            detail=str(error.get("code") or ""),
            budget=change,
        )

    def note_dead_lettered(
        self,
        job_id: str,
        reason: str,
        receive_count: int,
        *,
        statuses: Iterable[str] = (JobStatus.RECEIVED, JobStatus.SUBMITTED),
        now: float | None = None,
    ) -> TransitionResult:
        """An unfinished job's message failed its last receive: SQS moves it to the DLQ (status kept).

        Applies only while the record is still in one of ``statuses`` (the one the failed attempt
        left). Nothing retries the job until someone redrives the message; the next claim clears it."""
        moment = time.time() if now is None else now
        entry = {"at": iso(moment), "reason": reason[:500], "receiveCount": receive_count}
        return self._transition(job_id, None, statuses, now=moment, set_values={"deadLettered": entry})

    def mark_submitted(
        self,
        job_id: str,
        task_id: str,
        credits_used: int | None,
        execution_arn: str,
        *,
        submit_ms: int | None = None,
        held: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """SUBMITTING → SUBMITTED; the ``held`` reservation settles at the provider's creditsUsed."""
        moment = time.time() if now is None else now
        values: dict[str, Any] = {
            "taskId": task_id,
            "executionArn": execution_arn,
            "submittedAt": iso(moment),
            "latency": {"submitMs": submit_ms} if submit_ms is not None else {},
        }
        if credits_used is not None:
            values["creditsUsed"] = credits_used
        spent = None if held is None else credit_budget.settle_spent(held, credits_used)
        values, change = _settle(values, held, spent)
        return self._transition(
            job_id,
            JobStatus.SUBMITTED,
            [JobStatus.SUBMITTING],
            now=moment,
            set_values=values,
            remove=["leaseExpiresAt"],
            budget=change,
        )

    def mark_rejected(
        self,
        job_id: str,
        field_errors: Mapping[str, Sequence[str]],
        *,
        message: str,
        code: str = "PROVIDER_REJECTED",
        held: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """SUBMITTING → REJECTED: the provider answered 400 (nothing was charged: the ``held``
        reservation goes back)."""
        error = {
            "source": "provider",
            "code": code,
            "message": message,
            "fieldErrors": {k: list(v) for k, v in field_errors.items()},
        }
        values, change = _settle(
            {"error": error}, held, None if held is None else credit_budget.release(held)
        )
        return self._transition(
            job_id,
            JobStatus.REJECTED,
            [JobStatus.SUBMITTING],
            now=now,
            set_values=values,
            remove=["leaseExpiresAt"],
            detail=code,
            budget=change,
        )

    def mark_submit_unknown(
        self,
        job_id: str,
        reason: str,
        *,
        task_id: str | None = None,
        held: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        """SUBMITTING → SUBMIT_UNKNOWN: the submission may have been charged; never resubmitted.
        The ``held`` reservation counts as spent."""
        error = {"source": "provider", "code": "SUBMIT_OUTCOME_UNKNOWN", "message": reason}
        values: dict[str, Any] = {"error": error}
        if task_id:
            values["taskId"] = task_id
        values, change = _settle(
            values, held, None if held is None else credit_budget.settle_spent(held, None)
        )
        return self._transition(
            job_id,
            JobStatus.SUBMIT_UNKNOWN,
            [JobStatus.SUBMITTING],
            now=now,
            set_values=values,
            remove=["leaseExpiresAt"],
            detail=reason,
            budget=change,
        )

    def note_task_on_unknown(
        self, job_id: str, task_id: str, credits_used: int | None, *, now: float | None = None
    ) -> TransitionResult:
        """Keep a task id learnt after the record went SUBMIT_UNKNOWN (status unchanged) for reconciling."""
        values: dict[str, Any] = {"taskId": task_id}
        if credits_used is not None:
            values["creditsUsed"] = credits_used
        return self._transition(job_id, None, [JobStatus.SUBMIT_UNKNOWN], now=now, set_values=values)

    def mark_completed(
        self,
        job_id: str,
        outputs: Sequence[Mapping[str, Any]],
        *,
        credits_used: int | None = None,
        credits_refunded: int = 0,
        polls: int | None = None,
        latency: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        values: dict[str, Any] = {"outputs": [dict(o) for o in outputs], "creditsRefunded": credits_refunded}
        if credits_used is not None:
            values["creditsUsed"] = credits_used
        if polls is not None:
            values["polls"] = polls
        if latency is not None:
            values["latency"] = dict(latency)
        moment = time.time() if now is None else now
        values["completedAt"] = iso(moment)
        return self._transition(
            job_id, JobStatus.COMPLETED, [JobStatus.SUBMITTED], now=moment, set_values=values
        )

    def mark_failed(
        self,
        job_id: str,
        *,
        source: str,
        code: str,
        message: str,
        credits_refunded: int | None = None,
        polls: int | None = None,
        latency: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> TransitionResult:
        values: dict[str, Any] = {"error": {"source": source, "code": code, "message": message}}
        if credits_refunded is not None:
            values["creditsRefunded"] = credits_refunded
        if polls is not None:
            values["polls"] = polls
        if latency is not None:
            values["latency"] = dict(latency)
        return self._transition(
            job_id,
            JobStatus.FAILED,
            ACTIVE,
            now=now,
            set_values=values,
            remove=["leaseExpiresAt"],
            detail=code,
        )

    def mark_cancelled(self, job_id: str, reason: str, *, now: float | None = None) -> TransitionResult:
        """RECEIVED or SUBMITTED → CANCELLED. Never from SUBMITTING: a submission in flight may be
        charged, and its outcome must be recorded first. A SUBMITTED job keeps its creditsUsed (the
        provider cannot cancel a task); a RECEIVED one was never submitted."""
        return self._transition(
            job_id,
            JobStatus.CANCELLED,
            [JobStatus.RECEIVED, JobStatus.SUBMITTED],
            now=now,
            set_values={"error": {"source": "user", "code": "CANCELLED", "message": reason[:500]}},
            remove=["leaseExpiresAt", "budgetWait"],
            detail=reason,
        )

    def link_retry(
        self, job_id: str, retry_id: str, statuses: Iterable[str], *, now: float | None = None
    ) -> TransitionResult:
        """Note on a finished job that ``retry_id`` re-sends it (``retriedAs``; status kept). At most
        once: a second retry of the same job finds the link and sends nothing new."""
        return self._transition(
            job_id,
            None,
            statuses,
            now=now,
            set_values={"retriedAs": retry_id},
            extra_condition=("attribute_not_exists(retriedAs)", {}),
        )

    def mark_timed_out(
        self, job_id: str, *, polls: int | None = None, message: str = "", now: float | None = None
    ) -> TransitionResult:
        values: dict[str, Any] = {
            "error": {"source": "pipeline", "code": "TIMED_OUT", "message": message or "deadline passed"}
        }
        if polls is not None:
            values["polls"] = polls
        return self._transition(
            job_id, JobStatus.TIMED_OUT, [JobStatus.SUBMITTED], now=now, set_values=values
        )


def _counters(key: str, change: CounterChange, at: str, threshold: int | None) -> dict[str, Any]:
    """One budget item's counters changed by ``change``; with a ``threshold``, only if it fits."""
    counters: dict[str, Any] = {
        "Key": {"jobId": key},
        "UpdateExpression": "SET updatedAt = :now ADD reserved :r, spent :s, committed :c",
        "ExpressionAttributeValues": {
            ":now": at,
            ":r": change.reserved,
            ":s": change.spent,
            ":c": change.committed,
        },
    }
    if threshold is not None:
        counters["ConditionExpression"] = "attribute_not_exists(committed) OR committed <= :threshold"
        counters["ExpressionAttributeValues"][":threshold"] = threshold
    return counters


def _settle(
    values: dict[str, Any], held: Mapping[str, Any] | None, change: CounterChange | None
) -> tuple[dict[str, Any], CounterChange | None]:
    """The job update's values with the ``held`` reservation ended by ``change``: released when it
    spends nothing, else settled at what it spends."""
    if held is None or change is None:
        return values, None
    ended = {**held, "state": credit_budget.RELEASED if change.spent == 0 else credit_budget.SETTLED}
    if change.spent:
        ended["spent"] = change.spent
    return {**values, "budget": ended}, change
