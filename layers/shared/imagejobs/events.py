"""Job events on EventBridge (docs/events.md): what each record's change says, published at least once.

JobEventsFunction reads the jobs table's change stream. A change whose status differs from the
old image's, into SUBMITTED or a terminal status, becomes one "Job State Change" event whose
detail is exactly what the new record says. Its ``eventId`` is ``<jobId>/<status>``: a job
enters each of these statuses at most once (the store's conditional transitions), so a stream
record delivered twice, or re-read after a failed batch, gives the same id and consumers can
deduplicate on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from imagejobs.observability import count
from imagejobs.store import TERMINAL, JobStatus, from_dynamo
from imagejobs.webhooks import DeliveryQueue, delivery_for

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

SOURCE = "imagejobs"
JOB_STATE_CHANGE = "Job State Change"
# A RECEIVED job that found no room in the day's credit budget (docs/control.md): once per job and day.
JOB_BUDGET_WAIT = "Job Waiting For Budget"
PUBLISHED_STATUSES = frozenset({JobStatus.SUBMITTED}) | TERMINAL
# PutEvents takes at most 10 entries of at most 256 KB each (the detail here is a few KB).
ENTRIES_PER_CALL = 10


class EventPublishError(RuntimeError):
    """EventBridge refused some entries: the stream batch is retried from the first of them."""

    def __init__(self, failed: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{event_id}: {reason}" for event_id, reason in failed))
        self.event_ids = [event_id for event_id, _ in failed]


@dataclass(frozen=True)
class JobEvent:
    detail_type: str
    detail: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.detail["eventId"])


class EventPublisher(Protocol):
    def publish(self, events: Sequence[JobEvent]) -> None:
        """Publish every event or raise ``EventPublishError`` naming those that were not."""


def job_state_change(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> JobEvent | None:
    """The event for one change of a record (plain JSON images), or None when it is not one."""
    if not new:
        return None  # a deletion (TTL, a user's clean-up): not a state change of a job
    status = str(new.get("status") or "")
    previous = str((old or {}).get("status") or "") or None
    if status not in PUBLISHED_STATUSES or status == previous:
        return None
    job_id = str(new["jobId"])
    detail = {
        "eventId": f"{job_id}/{status}",
        "jobId": job_id,
        "batchId": new.get("batchId"),
        "status": status,
        "previousStatus": previous,
        "model": new.get("model"),
        "kind": new.get("kind"),
        "taskId": new.get("taskId"),
        "outputs": [
            {"bucket": o.get("bucket"), "key": o.get("key"), "uri": o.get("uri")}
            for o in new.get("outputs") or []
        ],
        "creditsUsed": new.get("creditsUsed"),
        "creditsRefunded": new.get("creditsRefunded"),
        "error": new.get("error"),
        "timings": {
            name: new.get(name)
            for name in ("createdAt", "submittedAt", "completedAt", "updatedAt")
            if new.get(name) is not None
        }
        | ({"latency": new["latency"]} if new.get("latency") else {}),
    }
    return JobEvent(JOB_STATE_CHANGE, detail)


def budget_wait(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> JobEvent | None:
    """The event for a job that started waiting for the credit budget (a new day's wait included)."""
    wait = (new or {}).get("budgetWait")
    if not wait or wait.get("day") == ((old or {}).get("budgetWait") or {}).get("day"):
        return None
    job_id = str(new["jobId"]) if new else ""
    detail = {
        "eventId": f"{job_id}/budgetWait/{wait.get('day')}",
        "jobId": job_id,
        "batchId": (new or {}).get("batchId"),
        "status": (new or {}).get("status"),
        "model": (new or {}).get("model"),
        "budgetWait": wait,
    }
    return JobEvent(JOB_BUDGET_WAIT, detail)


def publish_change(
    old_image: Mapping[str, Any] | None,
    new_image: Mapping[str, Any] | None,
    publisher: EventPublisher,
    webhooks: DeliveryQueue,
) -> str:
    """One stream record: publish its events (a state change, a wait for the budget), then queue
    the state change's webhook delivery when the job has one (after the events: a failure retries
    both, ids unchanged); what happened, for the log."""
    old, new_record = from_dynamo(old_image or {}), from_dynamo(new_image or {})
    event = job_state_change(old, new_record)
    events = [e for e in (event, budget_wait(old, new_record)) if e is not None]
    if not events:
        return "not a state change"
    publisher.publish(events)
    count("JobEventsPublished", len(events))
    done = ", ".join(e.event_id for e in events)
    delivery = delivery_for(event, new_record) if event is not None else None
    if delivery is None:
        return done
    webhooks.enqueue(delivery)
    count("WebhookDeliveriesQueued")
    return f"{done} (+ webhook)"


class EventBridgePublisher:
    """PutEvents on one bus, ten entries a call; failed entries raise after the rest went out."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, events: Sequence[JobEvent]) -> None:
        failed: list[tuple[str, str]] = []
        for start in range(0, len(events), ENTRIES_PER_CALL):
            chunk = events[start : start + ENTRIES_PER_CALL]
            response = self._client.put_events(Entries=[self._entry(event) for event in chunk])
            if response.get("FailedEntryCount"):
                failed.extend(
                    (event.event_id, f"{result.get('ErrorCode')}: {result.get('ErrorMessage')}")
                    for event, result in zip(chunk, response["Entries"], strict=True)
                    if result.get("ErrorCode")
                )
        if failed:
            raise EventPublishError(failed)

    def _entry(self, event: JobEvent) -> PutEventsRequestEntryTypeDef:
        return {
            "Source": SOURCE,
            "DetailType": event.detail_type,
            "Detail": json.dumps(event.detail, default=str, sort_keys=True),
            "EventBusName": self._bus_name,
        }
