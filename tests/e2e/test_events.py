"""Job events end to end (docs/events.md): the records' change stream → JobEventsFunction → EventBridge.

One in-process local stack (the AWS-fault layer is set at run time): a job in every terminal state,
each transition's event read back as a subscriber reads it (a rule on the stack's bus to a queue),
compared with the record; then EventBridge failing on every call, so the stream batch is retried,
described on JobEventsDeadLetterQueue, and skipped, and the events after it flow again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from imagejobs_tools.local.aws_faults import FaultRule
from imagejobs_tools.reliability.stacksuites import Harness, running_stack
from tests.e2e.conftest import TERMINAL, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


class Subscriber:
    """A rule on the bus sending every imagejobs event to a queue of its own, as a user would set up."""

    def __init__(self, h: Harness) -> None:
        self.sqs = h.stack.client("sqs")
        self.url = self.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = h.stack.client("events")
        bus = h.outputs["EventBusName"]
        events.put_rule(Name="jobs", EventBusName=bus, EventPattern=json.dumps({"source": ["imagejobs"]}))
        events.put_targets(Rule="jobs", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
        self.received: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        while messages := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages"):
            self.received.extend(json.loads(m["Body"]) for m in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )
        return self.received

    def of(self, job_id: str) -> list[dict[str, Any]]:
        return [e["detail"] for e in self.events() if e["detail"]["jobId"] == job_id]


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with running_stack("sk_test_events", parameters={"MaxWaitImageSeconds": "3"}) as h:
        yield h


def terminal(h: Harness, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (r := h.records().get(job_id)) and r.get("status") in TERMINAL and r,
        60,
        what=f"{job_id} terminal",
    )


def test_every_terminal_state_is_published_once_saying_what_the_record_says(harness: Harness) -> None:
    h = harness
    subscriber = Subscriber(h)
    h.send(
        [
            {"jobId": "ev-completed", "prompt": "events job: a lighthouse"},
            {"jobId": "ev-rejected", "prompt": ""},
            {
                "jobId": "ev-timed-out",
                "prompt": "events job: slow",
                "providerInput": {"simLatencySeconds": 600},
            },
        ]
    )
    records = {j: terminal(h, j) for j in ("ev-completed", "ev-rejected", "ev-timed-out")}
    h.sim.set_faults(task_failure_rate=1.0)
    h.send([{"jobId": "ev-failed", "prompt": "events job: fails"}])
    records["ev-failed"] = terminal(h, "ev-failed")
    h.sim.set_faults(task_failure_rate=0.0, lost_response_rate=1.0)
    h.send([{"jobId": "ev-unknown", "prompt": "events job: answer lost"}])
    records["ev-unknown"] = terminal(h, "ev-unknown")
    h.sim.set_faults(lost_response_rate=0.0)
    assert {j: r["status"] for j, r in records.items()} == {
        "ev-completed": "COMPLETED",
        "ev-rejected": "REJECTED",
        "ev-timed-out": "TIMED_OUT",
        "ev-failed": "FAILED",
        "ev-unknown": "SUBMIT_UNKNOWN",
    }
    # (status, previous status) of each job's events, in order.
    submitted = ("SUBMITTED", "SUBMITTING")
    expected: dict[str, list[tuple[str, str | None]]] = {
        "ev-completed": [submitted, ("COMPLETED", "SUBMITTED")],
        "ev-rejected": [("REJECTED", None)],  # its record is created REJECTED
        "ev-timed-out": [submitted, ("TIMED_OUT", "SUBMITTED")],
        "ev-failed": [submitted, ("FAILED", "SUBMITTED")],
        "ev-unknown": [("SUBMIT_UNKNOWN", "SUBMITTING")],
    }

    def all_arrived() -> bool:
        return all(len(subscriber.of(job)) >= len(events) for job, events in expected.items())

    wait_for(all_arrived, 30, what="every job's events")
    for job_id, transitions in expected.items():
        details = subscriber.of(job_id)
        assert [(d["status"], d["previousStatus"]) for d in details] == transitions, details
        assert [d["eventId"] for d in details] == [f"{job_id}/{status}" for status, _ in transitions]
        final, record = details[-1], records[job_id]
        assert (final["model"], final["creditsUsed"], final["error"]) == (
            record.get("model"),
            record.get("creditsUsed"),
            record.get("error"),
        )
        assert final["timings"]["updatedAt"] == record["updatedAt"]
    completed = subscriber.of("ev-completed")[-1]
    assert [o["key"] for o in completed["outputs"]] == [o["key"] for o in records["ev-completed"]["outputs"]]
    assert subscriber.of("ev-rejected")[0]["error"]["fieldErrors"]["prompt"]


def test_events_eventbridge_refuses_are_retried_then_described_on_the_dlq_and_later_ones_flow(
    harness: Harness,
) -> None:
    h = harness
    subscriber = Subscriber(h)
    h.stack.aws_faults.set_rules((FaultRule(service="events", operation="PutEvents", server_error=1.0),))
    try:
        h.send([{"jobId": "ev-unpublished", "prompt": "events job: bus down"}])
        terminal(h, "ev-unpublished")  # the job itself is unaffected
        dlq = h.outputs["JobEventsDeadLetterQueueUrl"]
        [message] = wait_for(
            lambda: h.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages"),
            120,
            what="the failed stream batch on JobEventsDeadLetterQueue",
        )
    finally:
        h.stack.aws_faults.set_rules(())
    info = json.loads(message["Body"])
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["requestContext"]["approximateInvokeCount"] == 11  # 1 + MaximumRetryAttempts 10
    assert info["DDBStreamBatchInfo"]["batchSize"] >= 1
    h.send([{"jobId": "ev-after", "prompt": "events job: bus back"}])
    terminal(h, "ev-after")
    wait_for(lambda: len(subscriber.of("ev-after")) == 2, 30, what="events after the outage")
    # The skipped batch held the job's SUBMITTED change: never published (the DLQ message says where
    # it is on the stream); its COMPLETED came later and may have gone out once the bus was back.
    assert "SUBMITTED" not in [d["status"] for d in subscriber.of("ev-unpublished")]
