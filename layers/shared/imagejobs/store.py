"""The job record in DynamoDB (docs/records.md): conditional state transitions and status history.

Every transition is one conditional write naming the statuses it may start from, so
two workers can never both win, and terminal statuses are never overwritten. A
transition that does not apply returns ``TransitionResult(applied=False, ...)`` with
the current record instead of raising: repeats (SQS redelivery, Step Functions
retries) are normal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

RECEIVED = "RECEIVED"
SUBMITTING = "SUBMITTING"
SUBMITTED = "SUBMITTED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
REJECTED = "REJECTED"
SUBMIT_UNKNOWN = "SUBMIT_UNKNOWN"
TERMINAL = frozenset({COMPLETED, FAILED, TIMED_OUT, REJECTED, SUBMIT_UNKNOWN})
ACTIVE = (RECEIVED, SUBMITTING, SUBMITTED)
BY_STATUS_INDEX = "ByStatus"


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

    @property
    def already(self) -> bool:
        return not self.applied and self.record is not None


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class JobStore:
    def __init__(self, table: Any) -> None:
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
            ExpressionAttributeValues={":completed": COMPLETED, ":model": model},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [float(item["latency"]["providerSeconds"]) for item in page.get("Items", [])]

    # -- creation ----------------------------------------------------------
    def _put_new(self, item: dict[str, Any]) -> TransitionResult:
        try:
            self.table.put_item(Item=to_dynamo(item), ConditionExpression="attribute_not_exists(jobId)")
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            current = self.get(item["jobId"])
            status = current.get("status") if current else None
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
        entry: dict[str, Any] = {"status": RECEIVED, "at": at}
        if detail:
            entry["detail"] = detail
        item: dict[str, Any] = {
            "jobId": job_id,
            "status": RECEIVED,
            "statusHistory": [entry],
            "createdAt": at,
            "updatedAt": at,
            "request": dict(request),
            "model": request.get("model"),
            "kind": request.get("kind"),
            "prompt": request.get("prompt"),
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
        now: float | None = None,
    ) -> TransitionResult:
        """Record a message that failed our validation, unless a record with this id exists.

        ``upload`` ({bucket, key, uri}) names the S3 upload the job was made from (S3 intake)."""
        at = iso(time.time() if now is None else now)
        item: dict[str, Any] = {
            "jobId": job_id,
            "status": REJECTED,
            "statusHistory": [{"status": REJECTED, "at": at, "detail": message}],
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
    ) -> TransitionResult:
        at = iso(time.time() if now is None else now)
        sources = list(from_statuses)
        names: dict[str, str] = {"#status": "status"}
        values: dict[str, Any] = {":now": at}
        sets = ["updatedAt = :now"]
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
        try:
            response = self.table.update_item(
                Key={"jobId": job_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            current = self.get(job_id)
            if current is None:
                return TransitionResult(False, None, None, "no such job")
            status = current.get("status")
            if status == to_status:
                reason = f"already {status}"
            elif status in TERMINAL:
                reason = f"record is {status} (terminal, never overwritten)"
            else:
                reason = f"record is {status}, expected {' or '.join(sources)}"
            return TransitionResult(False, status, current, reason)
        record = from_dynamo(response.get("Attributes", {}))
        return TransitionResult(True, record.get("status"), record)

    def claim_for_submit(
        self, job_id: str, lease_seconds: float, *, now: float | None = None
    ) -> TransitionResult:
        """RECEIVED → SUBMITTING; the lease (epoch seconds) tells others how long to keep off."""
        moment = time.time() if now is None else now
        return self._transition(
            job_id,
            SUBMITTING,
            [RECEIVED],
            now=moment,
            set_values={"claimedAt": iso(moment), "leaseExpiresAt": moment + lease_seconds},
            # A message redriven from the DLQ is being worked on again.
            remove=["deadLettered"],
            add={"submitAttempts": 1},
        )

    def release_claim(
        self, job_id: str, error: Mapping[str, Any], *, now: float | None = None
    ) -> TransitionResult:
        """SUBMITTING → RECEIVED after a submission that certainly charged nothing."""
        moment = time.time() if now is None else now
        return self._transition(
            job_id,
            RECEIVED,
            [SUBMITTING],
            now=moment,
            set_values={"lastSubmitError": {**error, "at": iso(moment)}},
            remove=["leaseExpiresAt"],
            detail=str(error.get("code") or ""),
        )

    def note_dead_lettered(
        self,
        job_id: str,
        reason: str,
        receive_count: int,
        *,
        statuses: Iterable[str] = (RECEIVED, SUBMITTED),
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
        now: float | None = None,
    ) -> TransitionResult:
        moment = time.time() if now is None else now
        values: dict[str, Any] = {
            "taskId": task_id,
            "executionArn": execution_arn,
            "submittedAt": iso(moment),
            "latency": {"submitMs": submit_ms} if submit_ms is not None else {},
        }
        if credits_used is not None:
            values["creditsUsed"] = credits_used
        return self._transition(
            job_id, SUBMITTED, [SUBMITTING], now=moment, set_values=values, remove=["leaseExpiresAt"]
        )

    def mark_rejected(
        self,
        job_id: str,
        field_errors: Mapping[str, Sequence[str]],
        *,
        message: str,
        code: str = "PROVIDER_REJECTED",
        now: float | None = None,
    ) -> TransitionResult:
        """SUBMITTING → REJECTED: the provider answered 400 (nothing was charged)."""
        error = {
            "source": "provider",
            "code": code,
            "message": message,
            "fieldErrors": {k: list(v) for k, v in field_errors.items()},
        }
        return self._transition(
            job_id,
            REJECTED,
            [SUBMITTING],
            now=now,
            set_values={"error": error},
            remove=["leaseExpiresAt"],
            detail=code,
        )

    def mark_submit_unknown(
        self, job_id: str, reason: str, *, task_id: str | None = None, now: float | None = None
    ) -> TransitionResult:
        """SUBMITTING → SUBMIT_UNKNOWN: the submission may have been charged; never resubmitted."""
        error = {"source": "provider", "code": "SUBMIT_OUTCOME_UNKNOWN", "message": reason}
        values: dict[str, Any] = {"error": error}
        if task_id:
            values["taskId"] = task_id
        return self._transition(
            job_id,
            SUBMIT_UNKNOWN,
            [SUBMITTING],
            now=now,
            set_values=values,
            remove=["leaseExpiresAt"],
            detail=reason,
        )

    def note_task_on_unknown(
        self, job_id: str, task_id: str, credits_used: int | None, *, now: float | None = None
    ) -> TransitionResult:
        """Keep a task id learnt after the record went SUBMIT_UNKNOWN (status unchanged) for reconciling."""
        values: dict[str, Any] = {"taskId": task_id}
        if credits_used is not None:
            values["creditsUsed"] = credits_used
        return self._transition(job_id, None, [SUBMIT_UNKNOWN], now=now, set_values=values)

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
        return self._transition(job_id, COMPLETED, [SUBMITTED], now=moment, set_values=values)

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
            job_id, FAILED, ACTIVE, now=now, set_values=values, remove=["leaseExpiresAt"], detail=code
        )

    def mark_timed_out(
        self, job_id: str, *, polls: int | None = None, message: str = "", now: float | None = None
    ) -> TransitionResult:
        values: dict[str, Any] = {
            "error": {"source": "pipeline", "code": "TIMED_OUT", "message": message or "deadline passed"}
        }
        if polls is not None:
            values["polls"] = polls
        return self._transition(job_id, TIMED_OUT, [SUBMITTED], now=now, set_values=values)
