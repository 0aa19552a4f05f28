"""What the stack publishes on EventBridge, observed the way a subscriber would see it.

Test and demo infrastructure, not part of any deployed stack: one SQS queue of the local stack's
own, and on every event bus (the account's default and the stack's) a rule sending every event
of this account to it. `drain()` returns the events delivered since the last call, as EventBridge
delivers them (`id`, `source`, `detail-type`, `time`, `detail`, ...).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

RULE_NAME = "imagejobs-local-observer"


class EventObserver:
    def __init__(self, events: EventBridgeClient, sqs: SQSClient, account_id: str, queue_name: str) -> None:
        self._events = events
        self._sqs = sqs
        self._account_id = account_id
        self._queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for bus in events.list_event_buses().get("EventBuses", []):
            events.put_rule(
                Name=RULE_NAME,
                EventBusName=bus["Name"],
                EventPattern=json.dumps({"account": [account_id]}),
                State="ENABLED",
            )
            events.put_targets(
                Rule=RULE_NAME, EventBusName=bus["Name"], Targets=[{"Id": "observer", "Arn": queue_arn}]
            )

    def drain(self) -> list[dict[str, Any]]:
        """The events delivered since the last call."""
        drained: list[dict[str, Any]] = []
        while True:
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return drained
            drained.extend(json.loads(message["Body"]) for message in messages)
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )
