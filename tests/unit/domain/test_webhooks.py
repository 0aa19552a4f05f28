"""Webhooks (docs/webhooks.md): the webhookUrl rule, signing, the retry decision and schedule."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from imagejobs.config import STANDARD_WEBHOOK_DELAYS, ConfigError, WebhookSettings
from imagejobs.events import job_state_change, publish_change
from imagejobs.store import to_dynamo
from imagejobs.urls import UnsafeUrlError
from imagejobs.webhooks import (
    Delivery,
    delivery_for,
    handle_delivery_message,
    result_for_status,
    retry_delay,
    signed_headers,
    signing_key,
    verification_problem,
)
from standardwebhooks import Webhook, WebhookVerificationError

from tests.unit.domain.test_jobs import errors_of, parse

SECRET = base64.b64encode(b"a-32-byte-signing-key-for-tests!").decode()
HOOK = "https://hooks.example.com/imagejobs"


def test_a_webhook_url_is_kept_in_the_request_and_checked_like_input_urls() -> None:
    resolver = _resolver({"hooks.example.com": ["93.184.216.34"], "rebind.example.com": ["10.1.2.3"]})
    request = parse({"prompt": "p", "webhookUrl": HOOK}, resolver=resolver)
    assert request.to_record()["webhookUrl"] == HOOK
    assert type(request).from_record(request.to_record()) == request
    for url, reason in (
        ("http://hooks.example.com/x", "must use https"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://169.254.169.254/latest", "metadata"),
        ("https://rebind.example.com/x", "private"),
        ("https://user:pw@hooks.example.com/", "credentials"),
    ):
        errors = errors_of({"prompt": "p", "webhookUrl": url}, resolver=resolver)
        assert list(errors) == ["webhookUrl"] and reason in errors["webhookUrl"][0], url
    assert errors_of({"prompt": "p", "webhookUrl": 7}, resolver=resolver) == {
        "webhookUrl": ["must be a URL string"]
    }
    # The local stack's receiver: an exact host:port in URL_ALLOW_HOSTS, plain http allowed.
    allowed = parse({"prompt": "p", "webhookUrl": "http://127.0.0.1:8999/h"}, allow_hosts=["127.0.0.1:8999"])
    assert allowed.webhook_url == "http://127.0.0.1:8999/h"


def _resolver(table: dict[str, list[str]]) -> Any:
    from tests.unit.domain.test_urls import resolver_for

    return resolver_for(table)


def _record(status: str, previous: str | None, webhook: str | None = HOOK) -> dict[str, Any]:
    request = {"jobId": "job-1", "prompt": "p"} | ({"webhookUrl": webhook} if webhook else {})
    return {"jobId": "job-1", "status": status, "request": request, "updatedAt": "2026-12-02T15:00:00Z"}


def test_each_published_event_of_a_job_with_a_webhook_is_queued_with_the_event_id() -> None:
    queued: list[Delivery] = []
    published: list[Any] = []

    class Publisher:
        def publish(self, events: Any) -> None:
            published.extend(events)

    class Queue:
        def enqueue(self, delivery: Delivery) -> None:
            queued.append(delivery)

    old, new = to_dynamo(_record("SUBMITTED", None)), to_dynamo(_record("COMPLETED", "SUBMITTED"))
    assert publish_change(old, new, Publisher(), Queue()) == "job-1/COMPLETED (+ webhook)"
    assert publish_change(new, new, Publisher(), Queue()) == "not a state change"
    assert publish_change(
        None, to_dynamo(_record("SUBMITTED", None, webhook=None)), Publisher(), Queue()
    ) == ("job-1/SUBMITTED")
    [delivery] = queued
    assert delivery.webhook_id == "job-1/COMPLETED" == published[0].event_id
    assert delivery.url == HOOK
    assert delivery.payload["data"] == published[0].detail
    assert Delivery.from_message(delivery.to_message()) == delivery


def test_signed_headers_verify_with_standardwebhooks_and_fail_when_tampered() -> None:
    event = job_state_change(None, _record("SUBMITTED", None))
    assert event is not None
    delivery = delivery_for(event, _record("SUBMITTED", None))
    assert delivery is not None
    body = delivery.body()
    headers = signed_headers(signing_key("s", SECRET), delivery, body, datetime.now(UTC))
    assert headers["webhook-id"] == "job-1/SUBMITTED"
    assert Webhook(SECRET).verify(body, headers)["data"]["status"] == "SUBMITTED"
    assert Webhook("whsec_" + SECRET).verify(body.encode(), headers)  # the prefixed form is the same key
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("SUBMITTED", "COMPLETED"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another key").decode()).verify(body, headers)
    with pytest.raises(ValueError, match="secret s is not a webhook signing secret"):
        signing_key("s", "")


def _signed_delivery(at: datetime) -> tuple[str, dict[str, str]]:
    """A SUBMITTED delivery's body and headers exactly as WebhookFunction signs and sends them."""
    record = _record("SUBMITTED", None)
    event = job_state_change(None, record)
    assert event is not None
    delivery = delivery_for(event, record)
    assert delivery is not None
    body = delivery.body()
    return body, signed_headers(signing_key("s", SECRET), delivery, body, at)


def test_the_receivers_check_passes_the_pipelines_own_delivery_and_agrees_with_standardwebhooks() -> None:
    now = datetime.now(UTC)
    body, headers = _signed_delivery(now)
    assert verification_problem(Webhook(SECRET), body, headers, now=now) is None
    # Header names are case-insensitive (HTTP servers often title-case them).
    titled = {name.title(): value for name, value in headers.items()}
    assert verification_problem(Webhook("whsec_" + SECRET), body, titled, now=now) is None
    assert Webhook(SECRET).verify(body, titled)["data"]["status"] == "SUBMITTED"
    # A body changed in transit, even by a trailing newline: both checks refuse it.
    for tampered in (body + "\n", body.replace("SUBMITTED", "COMPLETED")):
        assert verification_problem(Webhook(SECRET), tampered, headers, now=now) is not None
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, headers)


def test_the_receivers_check_says_why_a_delivery_does_not_verify() -> None:
    signed_at = datetime(2026, 12, 2, 15, 0, 0, tzinfo=UTC)
    body, headers = _signed_delivery(signed_at)
    at = signed_at.timestamp()

    def problem(body: str = body, headers: dict[str, str] = headers, secret: str = SECRET, **kw: Any) -> Any:
        now = datetime.fromtimestamp(at + kw.pop("later", 0), UTC)
        return verification_problem(Webhook(secret), body, headers, now=now, **kw)

    wrong = "wrong signature: no v1 signature matches"
    assert problem(body.replace("SUBMITTED", "COMPLETED")).startswith(wrong)
    assert problem(secret=base64.b64encode(b"another key").decode()).startswith(wrong)
    assert problem(headers=headers | {"webhook-id": "job-1/COMPLETED"}).startswith(wrong)
    assert problem(later=301) == "timestamp too old: 301 s before now (tolerance 300 s)"
    assert problem(later=-400) == "timestamp too new: 400 s after now (tolerance 300 s)"
    assert problem(later=301, tolerance=3600) is None  # a saved delivery checked later
    assert problem(later=2, tolerance=1) == "timestamp too old: 2 s before now (tolerance 1 s)"
    without = {k: v for k, v in headers.items() if k not in ("webhook-id", "webhook-signature")}
    assert problem(headers=without) == "missing header webhook-id, webhook-signature"
    assert problem(headers=headers | {"webhook-timestamp": "yesterday"}) == (
        "webhook-timestamp must be Unix seconds, got 'yesterday'"
    )
    assert problem(headers=headers | {"webhook-signature": "v2,abc"}).startswith(
        "webhook-signature has no v1"
    )
    # One good signature among several (a secret being rotated) is enough; garbage ones are skipped.
    several = headers | {"webhook-signature": "v1,!!notbase64 " + headers["webhook-signature"]}
    assert problem(headers=several) is None


@pytest.mark.parametrize(
    ("status", "delivered", "retryable"),
    [(200, True, False), (204, True, False), (500, False, True), (503, False, True), (429, False, True),
     (410, False, False), (400, False, False), (404, False, False), (301, False, False)],
)  # fmt: skip
def test_what_is_retried(status: int, delivered: bool, retryable: bool) -> None:
    result = result_for_status(status)
    assert (result.delivered, result.retryable, result.status) == (delivered, retryable, status)


def test_the_schedule_is_standard_webhooks_and_lasts_over_a_day() -> None:
    settings = WebhookSettings.from_env(
        {"WEBHOOK_QUEUE_URL": "q", "WEBHOOK_DEAD_LETTER_QUEUE_URL": "d", "WEBHOOK_SIGNING_SECRET": "s"}
    )
    assert settings.retry_delays == STANDARD_WEBHOOK_DELAYS == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert [retry_delay(n, settings.retry_delays) for n in range(1, 9)] == [*STANDARD_WEBHOOK_DELAYS, None]
    assert sum(STANDARD_WEBHOOK_DELAYS) >= 24 * 3600
    env = {"WEBHOOK_QUEUE_URL": "q", "WEBHOOK_DEAD_LETTER_QUEUE_URL": "d", "WEBHOOK_SIGNING_SECRET": "s"}
    assert WebhookSettings.from_env(env | {"WEBHOOK_RETRY_DELAYS": "1,2"}).retry_delays == (1, 2)
    for bad in ("1,x", "50000", "1,,2"):
        with pytest.raises(ConfigError, match="WEBHOOK_RETRY_DELAYS"):
            WebhookSettings.from_env(env | {"WEBHOOK_RETRY_DELAYS": bad})


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status_code = status

    def close(self) -> None:
        pass


class FakeSession:
    """Answers each POST with the next of `answers` (a status or an exception), recording requests."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.posts: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.posts.append({"url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return FakeResponse(answer)


class DeadLetters:
    def __init__(self) -> None:
        self.kept: list[tuple[str, str, int]] = []

    def put(self, body: str, reason: str, attempts: int) -> None:
        self.kept.append((body, reason, attempts))


def _handle(session: FakeSession, attempt: int, message: str | None = None, **kwargs: Any) -> Any:
    dead = DeadLetters()
    message = message or Delivery("job-1/COMPLETED", HOOK, {"data": {"status": "COMPLETED"}}).to_message()
    outcome = handle_delivery_message(
        message,
        attempt,
        session=session,  # type: ignore[arg-type]
        signer=Webhook(SECRET),
        delays=(5, 300),
        dead_letters=dead,
        resolver=kwargs.pop("resolver", _resolver({"hooks.example.com": ["93.184.216.34"]})),
    )
    return outcome, dead.kept


def test_a_delivery_is_posted_signed_with_a_short_timeout_and_no_redirects() -> None:
    session = FakeSession(200)
    outcome, dead = _handle(session, 1)
    assert (outcome.reason, outcome.retry_after, dead) == ("delivered (HTTP 200)", None, [])
    [post] = session.posts
    assert post["allow_redirects"] is False and max(post["timeout"]) <= 10
    assert Webhook(SECRET).verify(post["data"], post["headers"])["data"] == {"status": "COMPLETED"}


@pytest.mark.parametrize(
    "failure",
    [500, 429, requests.ConnectTimeout("slow"), requests.ReadTimeout("slow"), requests.ConnectionError("x")],
)
def test_transient_failures_retry_on_the_schedule_then_go_to_the_dlq(failure: int | Exception) -> None:
    assert _handle(FakeSession(failure), 1)[0].retry_after == 5
    assert _handle(FakeSession(failure), 2)[0].retry_after == 300
    outcome, [(body, reason, attempts)] = _handle(FakeSession(failure), 3)
    assert outcome.retry_after is None and attempts == 3
    assert (
        reason.startswith("gave up after 3 attempts: ") and json.loads(body)["webhookId"] == "job-1/COMPLETED"
    )


def test_other_4xx_unsafe_urls_and_bad_messages_go_straight_to_the_dlq_with_the_reason() -> None:
    outcome, [(_, reason, _)] = _handle(FakeSession(410), 1)
    assert (outcome.retry_after, reason) == (None, "HTTP 410")
    # The name resolved to a public address at intake; now it resolves to a private one: not sent.
    session = FakeSession()
    outcome, [(_, reason, _)] = _handle(session, 1, resolver=_resolver({"hooks.example.com": ["10.0.0.7"]}))
    assert session.posts == [] and "unsafe URL" in reason and "10.0.0.7 is a private address" in reason
    # The pinned adapter refusing at connect time (rebinding between the check and the connection).
    outcome, [(_, reason, _)] = _handle(FakeSession(UnsafeUrlError("h:443", "h resolves to 10.0.0.7")), 1)
    assert "unsafe URL" in reason
    outcome, [(body, reason, _)] = _handle(FakeSession(), 1, message="not json")
    assert body == "not json" and reason.startswith("invalid delivery message: body is not JSON")
