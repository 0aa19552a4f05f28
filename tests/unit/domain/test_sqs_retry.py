"""imagejobs.sqs_retry: claim leases and shortened redelivery for SQS-triggered functions."""

from __future__ import annotations

from typing import Any

import pytest
from imagejobs import sqs_retry
from imagejobs.sqs_retry import DEFAULT_LEASE_SECONDS, lease_seconds, queue_url_for, redeliver_after

ARN = "arn:aws:sqs:us-east-1:123456789012:imagejobs-JobsQueue-X"
CONFIGURED = "https://sqs.us-east-1.amazonaws.com/123456789012/imagejobs-JobsQueue-X"


class RecordingSqs:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.visibility: list[dict[str, Any]] = []
        self.lookups: list[dict[str, Any]] = []

    def change_message_visibility(self, **kwargs: Any) -> None:
        if self.fail:
            raise RuntimeError("AccessDenied")
        self.visibility.append(kwargs)

    def get_queue_url(self, **kwargs: Any) -> dict[str, str]:
        self.lookups.append(kwargs)
        return {"QueueUrl": f"https://sqs.example/{kwargs['QueueOwnerAWSAccountId']}/{kwargs['QueueName']}"}


@pytest.fixture(autouse=True)
def _forget_queue_urls() -> None:
    sqs_retry._QUEUE_URLS.clear()


class Context:
    def __init__(self, remaining_ms: Any) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> Any:
        return self.remaining_ms


def test_lease_outlives_the_invocation_by_a_margin() -> None:
    assert lease_seconds(Context(60_000)) == 90.0
    assert lease_seconds(Context("n/a")) == DEFAULT_LEASE_SECONDS
    assert lease_seconds(object()) == DEFAULT_LEASE_SECONDS  # no context methods (a test, a script)


def test_the_configured_queue_needs_no_lookup() -> None:
    sqs = RecordingSqs()
    assert queue_url_for(ARN, configured_url=CONFIGURED, sqs=sqs) == CONFIGURED
    assert sqs.lookups == []


def test_another_queue_is_looked_up_once() -> None:
    sqs = RecordingSqs()
    other = "arn:aws:sqs:us-east-1:210987654321:elsewhere"
    first = queue_url_for(other, configured_url=CONFIGURED, sqs=sqs)
    assert queue_url_for(other, configured_url=CONFIGURED, sqs=sqs) == first
    assert first == "https://sqs.example/210987654321/elsewhere"
    assert sqs.lookups == [{"QueueName": "elsewhere", "QueueOwnerAWSAccountId": "210987654321"}]


@pytest.mark.parametrize(
    ("seconds", "visibility"), [(10.0, 10), (0.2, 1), (0.0, 0), (-5, 0), (10**6, 43_200)]
)
def test_visibility_is_rounded_up_and_kept_within_sqs_limits(seconds: float, visibility: int) -> None:
    sqs = RecordingSqs()
    assert redeliver_after(
        sqs, queue_arn=ARN, receipt_handle="rh", seconds=seconds, configured_url=CONFIGURED
    )
    assert sqs.visibility == [
        {"QueueUrl": CONFIGURED, "ReceiptHandle": "rh", "VisibilityTimeout": visibility}
    ]


def test_a_failed_shortening_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sqs = RecordingSqs(fail=True)
    done = redeliver_after(sqs, queue_arn=ARN, receipt_handle="rh", seconds=5, configured_url=CONFIGURED)
    assert done is False
    assert "visibility timeout applies" in caplog.text
