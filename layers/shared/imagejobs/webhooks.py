"""Signed webhooks (docs/webhooks.md): a job's state changes POSTed to its ``webhookUrl``.

JobEventsFunction enqueues one delivery per published event of a job whose request names a
``webhookUrl``, and the "Batch Completed" of a batch whose item names one (the payload is the
event's detail, the ``webhook-id`` its stable ``eventId``, so a receiver deduplicates on it).
WebhookFunction POSTs each delivery following the Standard Webhooks convention (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256 over ``id.timestamp.body``). Timeouts,
connection errors, 5xx and 429 are retried on the schedule the delay list gives (by the message's
receive count); any other answer, or a URL that is no longer safe, goes straight to the dead-letter
queue with the reason; so does the last failed attempt. ``verification_problem`` is the receiver's
side (`imagejobs webhook verify`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests
from standardwebhooks import Webhook

from imagejobs import urls

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from imagejobs.events import JobEvent

# Short: a slow receiver must not hold a WebhookFunction instance (connect, read seconds).
DELIVERY_TIMEOUT = (3.05, 10.0)
USER_AGENT = "imagejobs-webhooks/1"


class InvalidDelivery(ValueError):
    """A delivery message that does not say what to deliver where (never retried)."""


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    url: str
    payload: Mapping[str, Any]

    def to_message(self) -> str:
        document = {"webhookId": self.webhook_id, "url": self.url, "payload": self.payload}
        return json.dumps(document, default=str)

    @classmethod
    def from_message(cls, body: str) -> Delivery:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InvalidDelivery(f"body is not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise InvalidDelivery("body must be a JSON object")
        webhook_id, url, payload = document.get("webhookId"), document.get("url"), document.get("payload")
        if not isinstance(webhook_id, str) or not webhook_id:
            raise InvalidDelivery("webhookId must be a non-empty string")
        if not isinstance(url, str) or not url:
            raise InvalidDelivery("url must be a non-empty string")
        if not isinstance(payload, dict):
            raise InvalidDelivery("payload must be a JSON object")
        return cls(webhook_id, url, payload)

    def body(self) -> str:
        """The exact bytes signed and sent (a receiver verifies these, before parsing them)."""
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":"), default=str)


def delivery_for(event: JobEvent, record: Mapping[str, Any]) -> Delivery | None:
    """The delivery of a job's ``event`` to the record's webhook, or None when the job has none."""
    url = (record.get("request") or {}).get("webhookUrl")
    return _delivery(event, url, event.detail.get("timings", {}).get("updatedAt"))


def batch_delivery_for(event: JobEvent, batch: Mapping[str, Any]) -> Delivery | None:
    """The delivery of a batch's ``event`` to the webhook its batch item names, or None."""
    return _delivery(event, batch.get("webhookUrl"), event.detail.get("completedAt"))


def _delivery(event: JobEvent, url: Any, timestamp: Any) -> Delivery | None:
    if not isinstance(url, str) or not url:
        return None
    return Delivery(
        event.event_id, url, {"type": event.detail_type, "timestamp": timestamp, "data": event.detail}
    )


class DeliveryQueue(Protocol):
    def enqueue(self, delivery: Delivery) -> None:
        """Queue ``delivery`` for WebhookFunction, or raise."""


class SqsDeliveryQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def enqueue(self, delivery: Delivery) -> None:
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=delivery.to_message())


def signing_key(secret_name: str, raw: str | bytes | None) -> Webhook:
    """The signer for a Standard Webhooks secret (base64, optionally ``whsec_``-prefixed)."""
    text = (raw.decode("utf-8") if isinstance(raw, bytes) else raw or "").strip()
    try:
        return Webhook(text)
    except Exception as exc:  # EmptyWebhookSecretError, binascii.Error: both mean "not a key"
        raise ValueError(f"secret {secret_name} is not a webhook signing secret ({exc})") from None


def signed_headers(signer: Webhook, delivery: Delivery, body: str, now: datetime) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(delivery.webhook_id, now, body),
    }


SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# Standard Webhooks' window (and standardwebhooks' fixed one): a replayed delivery is refused after it.
TIMESTAMP_TOLERANCE_SECONDS = 300


def verification_problem(
    signer: Webhook,
    body: str,
    headers: Mapping[str, str],
    *,
    now: datetime,
    tolerance: int = TIMESTAMP_TOLERANCE_SECONDS,
) -> str | None:
    """Why a received delivery does not verify, or None when it does (the receiver's check).

    ``Webhook.verify`` gives the same verdict at the default tolerance but only a vague reason and a
    fixed window; this says which header is missing, how far off the timestamp is, or that no
    signature matches, with the library's own signing (``Webhook.sign``) as the reference.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in SIGNATURE_HEADERS if not lowered.get(name)]
    if missing:
        return f"missing header {', '.join(missing)}"
    raw_timestamp = lowered["webhook-timestamp"]
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        return f"webhook-timestamp must be Unix seconds, got {raw_timestamp!r}"
    age = int(now.timestamp()) - timestamp
    if age > tolerance:
        return f"timestamp too old: {age} s before now (tolerance {tolerance} s)"
    if -age > tolerance:
        return f"timestamp too new: {-age} s after now (tolerance {tolerance} s)"
    expected = signer.sign(lowered["webhook-id"], datetime.fromtimestamp(timestamp, UTC), body)
    offered = [
        entry.partition(",")[2] for entry in lowered["webhook-signature"].split() if entry.startswith("v1,")
    ]
    if not offered:
        return "webhook-signature has no v1 signature (expected 'v1,<base64>')"
    expected_bytes = base64.b64decode(expected.partition(",")[2])
    for signature in offered:
        try:
            if hmac.compare_digest(expected_bytes, base64.b64decode(signature, validate=True)):
                return None
        except binascii.Error:
            continue
    return "wrong signature: no v1 signature matches (another secret, or the body or webhook-id changed)"


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    retryable: bool
    reason: str
    status: int | None = None


def result_for_status(status: int) -> DeliveryResult:
    """2xx delivered; 5xx and 429 retried; any other answer (other 4xx, redirects) is final."""
    if 200 <= status < 300:
        return DeliveryResult(True, False, f"HTTP {status}", status)
    if status >= 500 or status == 429:
        return DeliveryResult(False, True, f"HTTP {status}", status)
    # Redirects are not followed: the URL checked at intake is the only one ever posted to.
    return DeliveryResult(False, False, f"HTTP {status}", status)


def post_delivery(
    delivery: Delivery,
    *,
    session: requests.Session,
    signer: Webhook,
    allow_hosts: Iterable[str] = (),
    resolver: urls.Resolver = socket.getaddrinfo,
    now: datetime | None = None,
) -> DeliveryResult:
    """One attempt. The URL is checked again (DNS may have changed since intake), and the
    session's PinnedAddressAdapter connects only to the addresses it checks when connecting."""
    reason = urls.check_public_https_url(delivery.url, tuple(allow_hosts), resolver)
    if reason:
        return DeliveryResult(False, False, f"unsafe URL: {reason}")
    body = delivery.body()
    headers = signed_headers(signer, delivery, body, now or datetime.now(UTC))
    try:
        response = session.post(
            delivery.url,
            data=body.encode("utf-8"),
            headers=headers,
            timeout=DELIVERY_TIMEOUT,
            allow_redirects=False,
        )
    except urls.UnsafeUrlError as exc:
        return DeliveryResult(False, False, str(exc))
    except requests.Timeout as exc:
        return DeliveryResult(False, True, f"timed out ({type(exc).__name__})")
    except requests.ConnectionError as exc:
        return DeliveryResult(False, True, f"connection failed ({type(exc).__name__})")
    except requests.RequestException as exc:
        return DeliveryResult(False, False, f"request failed ({type(exc).__name__}: {exc})"[:300])
    response.close()
    return result_for_status(response.status_code)


def retry_delay(attempt: int, delays: Sequence[int]) -> int | None:
    """Seconds before the attempt after failed attempt number ``attempt`` (1-based: the SQS
    receive count), or None when it was the last (``len(delays) + 1`` attempts in all)."""
    if attempt < 1 or attempt > len(delays):
        return None
    return delays[attempt - 1]


@dataclass(frozen=True)
class DeliveryOutcome:
    """What to do with the delivery message: acknowledge it, retry it after ``retry_after``
    seconds, or move it to the dead-letter queue (``dead_letter_reason``)."""

    webhook_id: str | None
    reason: str
    retry_after: int | None = None
    dead_letter_reason: str | None = None


class DeadLetters(Protocol):
    def put(self, body: str, reason: str, attempts: int) -> None:
        """Keep ``body`` on the dead-letter queue, saying why, or raise."""


class SqsDeadLetters:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def put(self, body: str, reason: str, attempts: int) -> None:
        self._sqs.send_message(
            QueueUrl=self._queue_url,
            MessageBody=body,
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000]},
                "attempts": {"DataType": "Number", "StringValue": str(attempts)},
            },
        )


def handle_delivery_message(
    body: str,
    attempt: int,
    *,
    session: requests.Session,
    signer: Webhook,
    delays: Sequence[int],
    dead_letters: DeadLetters,
    allow_hosts: Iterable[str] = (),
    resolver: urls.Resolver = socket.getaddrinfo,
) -> DeliveryOutcome:
    """One delivery message, received for the ``attempt``-th time."""
    try:
        delivery = Delivery.from_message(body)
    except InvalidDelivery as exc:
        outcome = DeliveryOutcome(None, "invalid", dead_letter_reason=f"invalid delivery message: {exc}")
    else:
        result = post_delivery(
            delivery, session=session, signer=signer, allow_hosts=allow_hosts, resolver=resolver
        )
        delay = retry_delay(attempt, delays) if result.retryable else None
        if result.delivered:
            outcome = DeliveryOutcome(delivery.webhook_id, f"delivered ({result.reason})")
        elif delay is not None:
            outcome = DeliveryOutcome(delivery.webhook_id, f"attempt {attempt}: {result.reason}", delay)
        elif result.retryable:
            outcome = DeliveryOutcome(
                delivery.webhook_id,
                "gave up",
                dead_letter_reason=f"gave up after {attempt} attempts: {result.reason}",
            )
        else:
            outcome = DeliveryOutcome(delivery.webhook_id, "refused", dead_letter_reason=result.reason)
    if outcome.dead_letter_reason is not None:
        dead_letters.put(body, outcome.dead_letter_reason, attempt)
    return outcome
