"""SQS-triggered functions: how long a claim must last, and asking SQS to redeliver sooner.

A message the function cannot finish now (another worker holds the job's submit claim, the
provider said 429) is reported as a batch item failure; SQS would then keep it hidden for
the queue's whole visibility timeout (20 minutes by default). When the outcome says when a
retry makes sense, the message's visibility is shortened to that. A message that must wait long
and often (a job waiting for credit budget) is sent again with a delay instead (``send_again``):
every receive counts towards the queue's maxReceiveCount, a new message starts from zero.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from imagejobs.config import SQS_MAX_DELAY_SECONDS
from imagejobs.invocation import InvocationContext, remaining_seconds
from imagejobs.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

DEFAULT_LEASE_SECONDS = 900.0  # Lambda's maximum timeout, when no context tells us ours
LEASE_MARGIN_SECONDS = 30.0
MAX_VISIBILITY_SECONDS = 43_200  # SQS's limit (12 hours)
_QUEUE_URLS: dict[tuple[str, str], str] = {}


class RetryLater(Exception):
    """Marks the SQS record as a batch item failure: SQS redelivers it after its visibility timeout."""


def receive_count(record: SQSRecord) -> int | None:
    """How many times SQS has delivered this record (None when the attribute is missing)."""
    try:
        return int(record.attributes.approximate_receive_count)
    except (KeyError, TypeError, ValueError):
        return None


def lease_seconds(context: InvocationContext | None) -> float:
    """A claim must outlive this invocation: the function's remaining time plus a margin."""
    remaining = remaining_seconds(context)
    return DEFAULT_LEASE_SECONDS if remaining is None else remaining + LEASE_MARGIN_SECONDS


def queue_url_for(queue_arn: str, *, configured_url: str, sqs: SQSClient) -> str:
    """The URL of the queue a record came from: the configured one when it is that queue (no
    sqs:GetQueueUrl permission needed), else asked of SQS once and remembered."""
    key = (queue_arn, configured_url)
    known = _QUEUE_URLS.get(key)
    if known is not None:
        return known
    _, _, _, _, account, name = queue_arn.split(":", 5)
    if configured_url.rstrip("/").endswith(f"/{account}/{name}"):
        url = configured_url
    else:
        url = str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
    _QUEUE_URLS[key] = url
    return url


def redeliver_after(
    sqs: SQSClient, *, queue_arn: str, receipt_handle: str, seconds: float, configured_url: str
) -> bool:
    """Shorten a failed message's visibility so SQS offers it again after `seconds`.

    Best effort: on any error the queue's own visibility timeout still redelivers the message,
    so this logs and returns False instead of failing the batch."""
    try:
        sqs.change_message_visibility(
            QueueUrl=queue_url_for(queue_arn, configured_url=configured_url, sqs=sqs),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds))),
        )
    except Exception:
        logger.warning("could not shorten the retry delay; the queue's visibility timeout applies")
        return False
    return True


def send_again(sqs: SQSClient, *, queue_url: str, body: str, seconds: float) -> None:
    """Send the message again, offered after `seconds` (at most SQS's 15 minutes). The caller then
    acknowledges the received copy; if this raises, the copy stays and its visibility timeout
    redelivers it."""
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        DelaySeconds=max(0, min(SQS_MAX_DELAY_SECONDS, math.ceil(seconds))),
    )
