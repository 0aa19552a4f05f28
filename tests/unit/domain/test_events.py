"""Job events (docs/events.md): which record changes are events, what they say, how they are published."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from imagejobs.events import (
    JOB_STATE_CHANGE,
    SOURCE,
    EventBridgePublisher,
    EventPublishError,
    JobEvent,
    job_state_change,
    publish_change,
)

SUBMITTED = {
    "jobId": "job-1",
    "status": "SUBMITTED",
    "model": "gpt-image-2",
    "kind": "image",
    "taskId": "task_1",
    "creditsUsed": 3,
    "createdAt": "2026-12-02T00:00:00.000Z",
    "submittedAt": "2026-12-02T00:00:00.400Z",
    "updatedAt": "2026-12-02T00:00:00.400Z",
}
COMPLETED = {
    **SUBMITTED,
    "status": "COMPLETED",
    "batchId": "batch-7",
    "completedAt": "2026-12-02T00:00:09.000Z",
    "latency": {"generationSeconds": 8.6},
    "outputs": [
        {"uri": "s3://b/o/job-1/1.png", "bucket": "b", "key": "o/job-1/1.png", "bytes": 10, "sha256": "x"}
    ],
}


def test_a_completed_job_is_one_event_saying_what_the_record_says() -> None:
    event = job_state_change(SUBMITTED, COMPLETED)
    assert event is not None and event.detail_type == JOB_STATE_CHANGE
    detail = event.detail
    assert detail["eventId"] == "job-1/COMPLETED" == event.event_id
    assert (detail["status"], detail["previousStatus"]) == ("COMPLETED", "SUBMITTED")
    assert detail["batchId"] == "batch-7" and detail["model"] == "gpt-image-2" and detail["kind"] == "image"
    assert detail["outputs"] == [{"bucket": "b", "key": "o/job-1/1.png", "uri": "s3://b/o/job-1/1.png"}]
    assert detail["creditsUsed"] == 3 and detail["creditsRefunded"] is None and detail["error"] is None
    assert detail["timings"] == {
        "createdAt": "2026-12-02T00:00:00.000Z",
        "submittedAt": "2026-12-02T00:00:00.400Z",
        "completedAt": "2026-12-02T00:00:09.000Z",
        "updatedAt": "2026-12-02T00:00:00.400Z",
        "latency": {"generationSeconds": 8.6},
    }


@pytest.mark.parametrize(
    "status", ["SUBMITTED", "COMPLETED", "FAILED", "TIMED_OUT", "REJECTED", "SUBMIT_UNKNOWN"]
)
def test_submitted_and_every_terminal_status_are_published(status: str) -> None:
    event = job_state_change({"jobId": "j", "status": "SUBMITTING"}, {"jobId": "j", "status": status})
    assert event is not None and event.event_id == f"j/{status}"


def test_a_record_created_rejected_has_no_previous_status() -> None:
    new = {"jobId": "bad", "status": "REJECTED", "error": {"code": "VALIDATION_FAILED"}}
    event = job_state_change(None, new)
    assert event is not None
    assert event.detail["previousStatus"] is None and event.detail["error"] == {"code": "VALIDATION_FAILED"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, {"jobId": "j", "status": "RECEIVED"}),  # intermediate statuses are not published
        ({"jobId": "j", "status": "RECEIVED"}, {"jobId": "j", "status": "SUBMITTING"}),
        ({"jobId": "j", "status": "SUBMITTING"}, {"jobId": "j", "status": "RECEIVED"}),  # a released claim
        (SUBMITTED, {**SUBMITTED, "polls": 4}),  # same status, another attribute
        (COMPLETED, None),  # a deletion
    ],
)
def test_changes_that_are_not_state_changes_publish_nothing(
    old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    assert job_state_change(old, new) is None


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[JobEvent] = []

    def publish(self, events: Sequence[JobEvent]) -> None:
        self.published.extend(events)


class NoWebhooks:
    def enqueue(self, delivery: object) -> None:
        raise AssertionError(f"a job without a webhookUrl got a delivery: {delivery}")


def test_publish_change_reads_dynamodb_numbers_and_names_what_it_did() -> None:
    from decimal import Decimal

    publisher = RecordingPublisher()
    old = {**SUBMITTED, "creditsUsed": Decimal("3")}
    new = {**COMPLETED, "creditsUsed": Decimal("3"), "latency": {"generationSeconds": Decimal("8.6")}}
    no_webhooks = NoWebhooks()
    assert publish_change(old, new, publisher, no_webhooks) == "job-1/COMPLETED"
    assert publish_change(new, new, publisher, no_webhooks) == "not a state change"
    [event] = publisher.published
    assert event.detail["creditsUsed"] == 3 and isinstance(event.detail["creditsUsed"], int)
    assert event.detail["timings"]["latency"] == {"generationSeconds": 8.6}


class FakeEventBridge:
    """PutEvents as EventBridge answers it; `refuse` names event ids it reports as failed entries."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.refuse = refuse

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        results = [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
            if json.loads(entry["Detail"])["eventId"] in self.refuse
            else {"EventId": f"ev-{len(self.calls)}-{n}"}
            for n, entry in enumerate(Entries)
        ]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def events(count: int) -> list[JobEvent]:
    return [
        JobEvent(JOB_STATE_CHANGE, {"eventId": f"j{n}/COMPLETED", "jobId": f"j{n}"}) for n in range(count)
    ]


def test_the_publisher_sends_ten_entries_a_call_on_its_bus() -> None:
    client = FakeEventBridge()
    EventBridgePublisher(client, "imagejobs-events").publish(events(23))
    assert [len(call) for call in client.calls] == [10, 10, 3]
    entry = client.calls[0][0]
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        SOURCE,
        JOB_STATE_CHANGE,
        "imagejobs-events",
    )
    assert json.loads(entry["Detail"]) == {"eventId": "j0/COMPLETED", "jobId": "j0"}


def test_failed_entries_raise_naming_them_after_the_rest_went_out() -> None:
    client = FakeEventBridge(refuse=frozenset({"j3/COMPLETED", "j12/COMPLETED"}))
    with pytest.raises(EventPublishError) as caught:
        EventBridgePublisher(client, "bus").publish(events(15))
    assert caught.value.event_ids == ["j3/COMPLETED", "j12/COMPLETED"]
    assert "InternalFailure" in str(caught.value)
    assert sum(len(call) for call in client.calls) == 15


def test_a_job_waiting_for_the_budget_is_one_event_per_day() -> None:
    from imagejobs.events import JOB_BUDGET_WAIT, budget_wait

    received = {"jobId": "j", "status": "RECEIVED", "model": "gpt-image-2"}
    wait = {"at": "2026-12-02T10:00:00.000Z", "day": "2026-12-02", "credits": 3, "limit": 9, "reason": "r"}
    waiting = {**received, "budgetWait": wait}
    event = budget_wait(received, waiting)
    assert event is not None and event.detail_type == JOB_BUDGET_WAIT
    assert event.event_id == "j/budgetWait/2026-12-02" and event.detail["budgetWait"] == wait
    # A recheck the same day writes a new `at`: no second event; the next day's wait is one.
    recheck = {**received, "budgetWait": {**wait, "at": "2026-12-02T10:05:00.000Z"}}
    assert budget_wait(waiting, recheck) is None
    next_day = budget_wait(waiting, {**received, "budgetWait": {**wait, "day": "2026-12-03"}})
    assert next_day is not None and next_day.event_id == "j/budgetWait/2026-12-03"
    assert budget_wait(waiting, {**received, "status": "SUBMITTING"}) is None  # claimed: the wait is over
    publisher = RecordingPublisher()
    assert publish_change(received, waiting, publisher, NoWebhooks()) == "j/budgetWait/2026-12-02"
