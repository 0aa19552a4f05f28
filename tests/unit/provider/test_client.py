from __future__ import annotations

import email.utils
import logging
import time
import traceback

import pytest
import requests
from imagejobs.provider import (
    InsufficientCredits,
    Limits,
    OutcomeUnknown,
    ProviderClient,
    ProviderError,
    ProviderRejected,
    ProviderServerError,
    ProviderUnauthorized,
    ProviderUnreachable,
    RateLimited,
    RetryPolicy,
    Submission,
    TaskNotFound,
    TaskStatus,
    Timeout,
    parse_retry_after,
)
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import fakes
from .conftest import API_KEY, BASE_URL, MakeClient
from .fakes import Canned

BODY = {"prompt": "a red fox", "model": "gpt-image-2", "aspectRatio": "4:5"}
ACCEPTED = Canned(200, {"taskId": "tsk_1", "status": 0, "creditsUsed": 3})
PENDING = Canned(
    200, {"id": "tsk_1", "type": "image", "status": 0, "creditsUsed": 3, "creditRefunded": False}
)


# ---- happy paths and what goes on the wire


def test_submit_image_sends_one_post_with_bearer_key_and_timeouts(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(ACCEPTED, timeout=Timeout(connect=2, read=9))
    assert client.submit_image(BODY) == Submission(task_id="tsk_1", credits_used=3, status=TaskStatus.PENDING)
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", f"{BASE_URL}/api/ai/image/generate")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.body == BODY
    assert sent.timeout == (2.0, 9.0)
    assert "Authorization" not in client.session.headers  # only per request, never on the shared session


def test_submit_video_uses_the_video_endpoint(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(Canned(200, {"taskId": "tsk_v", "status": 0, "creditsUsed": 40}))
    body = {"prompt": "surf", "model": "veo3", "inputMode": "text_to_video", "duration": 8}
    assert client.submit_video(body).task_id == "tsk_v"
    assert adapter.sent[0].url == f"{BASE_URL}/api/ai/video/generate"


def test_submit_video_sends_the_mode_a_single_mode_model_implies(make_client: MakeClient) -> None:
    accepted = Canned(200, {"taskId": "tsk_v", "status": 0, "creditsUsed": 30})
    client, adapter, _ = make_client(accepted, accepted)
    client.submit_video({"prompt": "surf", "model": "sora-2-text-to-video", "duration": 10})
    client.submit_video({"prompt": "surf", "model": "unknown-video-model"})
    assert adapter.sent[0].body == {
        "prompt": "surf", "model": "sora-2-text-to-video", "duration": 10, "inputMode": "text_to_video"
    }  # fmt: skip
    assert adapter.sent[1].body == {"prompt": "surf", "model": "unknown-video-model"}


def test_get_task_quotes_the_id(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(Canned(200, {"id": "a/../b", "status": 0}))
    client.get_task("a/../b")
    assert adapter.sent[0].url == f"{BASE_URL}/api/ai/tasks/a%2F..%2Fb"
    with pytest.raises(ValueError):
        client.get_task(" ")


def test_callable_key_is_resolved_per_call(make_client: MakeClient) -> None:
    keys = iter(["sk_one", "sk_two"])
    client, adapter, _ = make_client(ACCEPTED, PENDING, api_key=lambda: next(keys))
    client.submit_image(BODY)
    client.get_task("tsk_1")
    assert [s.headers["Authorization"] for s in adapter.sent] == ["Bearer sk_one", "Bearer sk_two"]


def test_key_source_failure_or_empty_key_sends_nothing(make_client: MakeClient) -> None:
    def broken() -> str:
        raise RuntimeError("secrets manager down: arn:aws:secretsmanager:...")

    client, adapter, _ = make_client(api_key=broken)
    with pytest.raises(ProviderUnreachable) as caught:
        client.submit_image(BODY)
    assert caught.value.retryable and "secrets manager" not in str(caught.value)
    client, adapter2, _ = make_client(api_key=lambda: "  ")
    with pytest.raises(ProviderUnauthorized):
        client.get_task("tsk_1")
    assert adapter.sent == [] and adapter2.sent == []


# ---- local validation


def test_invalid_body_is_rejected_locally_without_a_request(make_client: MakeClient) -> None:
    client, adapter, _ = make_client()
    with pytest.raises(ProviderRejected) as caught:
        client.submit_image({"prompt": "x" * 20_001, "model": "gpt-image-2", "inputImageUrls": ["u"] * 5})
    err = caught.value
    assert err.local and err.status_code is None and not err.retryable
    assert err.field_errors == {
        "prompt": ["must be at most 20000 characters (got 20001)"],
        "inputImageUrls": ["must have at most 4 items for 'gpt-image-2' (got 5)"],
    }
    assert "prompt: must be at most 20000 characters" in str(err)
    with pytest.raises(ProviderRejected):
        client.submit_video({"prompt": "p", "model": "veo3", "inputMode": "text_to_video", "duration": 5})
    assert adapter.sent == []


# ---- error taxonomy (non-retryable statuses: exactly one request)


def test_400_parses_field_and_form_errors(make_client: MakeClient) -> None:
    body = {
        "error": "Invalid request",
        "details": {"formErrors": ["too many fields"], "fieldErrors": {"prompt": ["Prompt is required"]}},
    }
    client, adapter, _ = make_client(Canned(400, body))
    with pytest.raises(ProviderRejected) as caught:
        client.submit_image(BODY)
    err = caught.value
    assert (err.field_errors, err.form_errors, err.local, err.status_code) == (
        {"prompt": ["Prompt is required"]},
        ["too many fields"],
        False,
        400,
    )
    assert not err.retryable and len(adapter.sent) == 1


def test_400_without_details_keeps_the_error_text(make_client: MakeClient) -> None:
    client, _, _ = make_client(Canned(400, b"<html>bad</html>"))
    with pytest.raises(ProviderRejected) as caught:
        client.submit_image(BODY)
    assert caught.value.field_errors == {} and caught.value.form_errors == ["invalid request"]


@pytest.mark.parametrize(
    ("response", "error_type", "status"),
    [
        (Canned(401, {"error": "Unauthorized"}), ProviderUnauthorized, 401),
        (Canned(402, {"error": "Insufficient credits", "required": 12}), InsufficientCredits, 402),
        (Canned(404, {"error": "Not found"}), ProviderServerError, 404),  # wrong base URL, not a task
        (Canned(418, {"error": "teapot"}), ProviderServerError, 418),
        (Canned(302, b"", {"Location": "http://elsewhere/"}), ProviderServerError, 302),
    ],
)
def test_non_retryable_submit_statuses(
    make_client: MakeClient, response: Canned, error_type: type[ProviderError], status: int
) -> None:
    client, adapter, _ = make_client(response)
    with pytest.raises(error_type) as caught:
        client.submit_image(BODY)
    assert caught.value.status_code == status
    assert not caught.value.retryable
    assert len(adapter.sent) == 1  # no retry, no redirect followed


def test_402_carries_required(make_client: MakeClient) -> None:
    client, _, _ = make_client(Canned(402, {"error": "Insufficient credits", "required": 12}))
    with pytest.raises(InsufficientCredits) as caught:
        client.submit_image(BODY)
    assert caught.value.required == 12
    assert "12 required" in str(caught.value)


def test_404_on_get_is_task_not_found(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(Canned(404, {"error": "Task not found"}))
    with pytest.raises(TaskNotFound) as caught:
        client.get_task("tsk_other")
    assert caught.value.task_id == "tsk_other" and caught.value.status_code == 404
    assert len(adapter.sent) == 1


# ---- the no-double-charge rule: submissions whose outcome is unknown are sent once


@pytest.mark.parametrize(
    "failure",
    [
        fakes.read_timeout(),
        fakes.remote_disconnected(),
        fakes.connection_reset(),
        Canned(200, {"taskId": "tsk_1"}, body_error=fakes.truncated_body()),
        Canned(200, {"taskId": "tsk_1", "creditsUsed": 3}, body_error=fakes.body_read_timeout()),
        Canned(200, b"<html>ok</html>"),
        Canned(200, {"status": 0, "creditsUsed": 3}),  # no taskId
        Canned(200, b"[1, 2]"),
        Canned(504, b"gateway timeout"),
        Canned(200, b"{" + b" " * (1024 * 1024 + 10) + b"}"),  # oversized body
    ],
    ids=[
        "read-timeout", "remote-disconnected", "reset", "truncated-body", "body-read-timeout",
        "non-json-200", "no-task-id", "json-array", "gateway-504", "oversized",
    ],
)  # fmt: skip
def test_unknown_outcome_submission_is_never_retried(make_client: MakeClient, failure: object) -> None:
    # Scripted successes after the failure would be used by a (wrong) retry.
    client, adapter, clock = make_client(failure, ACCEPTED, ACCEPTED, retry=RetryPolicy(max_attempts=5))
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit_image(BODY)
    assert adapter.count("POST") == 1
    assert clock.sleeps == []
    assert caught.value.submission and not caught.value.retryable


# ---- pre-send failures and "not processed" statuses are retried for submissions


@pytest.mark.parametrize(
    "failure",
    [
        fakes.connection_refused(),
        fakes.name_resolution_failed(),
        fakes.connect_timeout(),
        fakes.cert_verify_failed(),
        Canned(500, {"error": "Internal error"}),
        Canned(503, b"unavailable"),
        Canned(429, {"error": "slow down"}),
    ],
    ids=["refused", "dns", "connect-timeout", "cert", "500", "503", "429"],
)
def test_safe_submit_failures_are_retried(make_client: MakeClient, failure: object) -> None:
    client, adapter, clock = make_client(failure, ACCEPTED)
    assert client.submit_image(BODY).task_id == "tsk_1"
    assert adapter.count("POST") == 2
    assert len(clock.sleeps) == 1


def test_unreachable_is_raised_after_max_attempts(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(
        *(fakes.connection_refused() for _ in range(3)), retry=RetryPolicy(max_attempts=3)
    )
    with pytest.raises(ProviderUnreachable) as caught:
        client.submit_image(BODY)
    assert caught.value.retryable and caught.value.status_code is None
    assert adapter.count("POST") == 3


def test_5xx_is_raised_after_max_attempts(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(
        *(Canned(500, {"error": "boom"}) for _ in range(4)), retry=RetryPolicy(max_attempts=4)
    )
    with pytest.raises(ProviderServerError) as caught:
        client.submit_image(BODY)
    assert caught.value.status == 500 and caught.value.retryable
    assert "boom" in str(caught.value)
    assert adapter.count("POST") == 4


# ---- GET: every transient failure is retried


@pytest.mark.parametrize(
    "failure",
    [
        fakes.read_timeout(),
        fakes.remote_disconnected(),
        fakes.connection_refused(),
        Canned(200, {"id": "tsk_1"}, body_error=fakes.truncated_body()),
        Canned(200, b"not json"),
        Canned(502, b"bad gateway"),
        Canned(504, b"gateway timeout"),
        Canned(429, {}, {"Retry-After": "1"}),
    ],
    ids=["read-timeout", "disconnected", "refused", "truncated", "non-json", "502", "504", "429"],
)
def test_get_task_retries_transient_failures(make_client: MakeClient, failure: object) -> None:
    client, adapter, _ = make_client(failure, PENDING)
    assert client.get_task("tsk_1").status is TaskStatus.PENDING
    assert adapter.count("GET") == 2


def test_get_read_timeouts_exhausted_raise_retryable_outcome_unknown(make_client: MakeClient) -> None:
    client, adapter, _ = make_client(*(fakes.read_timeout() for _ in range(3)))
    with pytest.raises(OutcomeUnknown) as caught:
        client.get_task("tsk_1")
    assert caught.value.retryable and not caught.value.submission  # the poll step may try again later
    assert adapter.count("GET") == 3


# ---- backoff, Retry-After and the budget


def test_full_jitter_backoff_bounds(make_client: MakeClient) -> None:
    client, _, clock = make_client(
        *(Canned(500, {}) for _ in range(5)),
        retry=RetryPolicy(max_attempts=5, backoff_base=0.5, backoff_cap=1.5), random=lambda: 1.0,
    )  # fmt: skip
    with pytest.raises(ProviderServerError):
        client.get_task("tsk_1")
    assert clock.sleeps == [0.5, 1.0, 1.5, 1.5]  # base * 2**n, capped; random()=1.0 is the upper bound


def test_jitter_scales_the_delay(make_client: MakeClient) -> None:
    draws = iter([0.0, 0.25])
    client, _, clock = make_client(
        Canned(500, {}),
        Canned(500, {}),
        PENDING,
        retry=RetryPolicy(backoff_base=2.0),
        random=lambda: next(draws),
    )
    client.get_task("tsk_1")
    assert clock.sleeps == [0.0, 1.0]


def test_retry_after_seconds_is_honoured(make_client: MakeClient) -> None:
    client, _, clock = make_client(Canned(429, {"error": "rate"}, {"Retry-After": "7"}), ACCEPTED)
    client.submit_image(BODY)
    assert clock.sleeps == [7.0]


def test_retry_after_http_date_is_honoured(make_client: MakeClient) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    client, _, clock = make_client(
        Canned(429, {}, {"Retry-After": when}),
        ACCEPTED,
        retry=RetryPolicy(max_retry_after=300, max_total_seconds=300),
    )
    client.submit_image(BODY)
    [slept] = clock.sleeps
    assert 100 < slept <= 121


def test_retry_after_beyond_the_cap_is_not_waited_for(make_client: MakeClient) -> None:
    client, adapter, clock = make_client(
        Canned(429, {}, {"Retry-After": "3600"}), ACCEPTED, retry=RetryPolicy(max_retry_after=20)
    )
    with pytest.raises(RateLimited) as caught:
        client.submit_image(BODY)
    assert caught.value.retry_after == 3600 and caught.value.retryable
    assert clock.sleeps == [] and len(adapter.sent) == 1


def test_total_budget_stops_retries(make_client: MakeClient) -> None:
    steps = [Canned(429, {}, {"Retry-After": "10"}) for _ in range(5)]
    client, adapter, clock = make_client(
        *steps, retry=RetryPolicy(max_attempts=5, max_total_seconds=25, max_retry_after=60)
    )
    with pytest.raises(RateLimited):
        client.get_task("tsk_1")
    assert clock.sleeps == [10.0, 10.0]  # a third wait would end past the 25 s budget
    assert len(adapter.sent) == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (" 2.5 ", 2.5), ("-3", 0.0), ("", None), (None, None), ("soon", None), ("inf", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_dates() -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0.0


# ---- snapshots: both documented shapes, unknown fields


def test_quickstart_shape_completed(make_client: MakeClient) -> None:
    data = {
        "id": "tsk_1", "type": "image", "status": 1,
        "outputImageUrls": ["https://static.example/u/abc123.jpg"],
        "createdAt": "2026-04-22T09:00:00.000Z", "completedAt": "2026-04-22T09:00:32.000Z",
        "creditsUsed": 3, "creditRefunded": False, "someNewField": {"x": 1},
    }  # fmt: skip
    client, _, _ = make_client(Canned(200, data))
    snap = client.get_task("tsk_1")
    assert snap.task_id == "tsk_1" and snap.kind == "image" and snap.status is TaskStatus.COMPLETED
    assert snap.output_urls == ("https://static.example/u/abc123.jpg",)
    assert (snap.credits_used, snap.credits_refunded) == (3, False)
    assert snap.completed_at == "2026-04-22T09:00:32.000Z" and snap.updated_at is None
    assert snap.raw["someNewField"] == {"x": 1} and snap.is_terminal


def test_reference_shape_failed(make_client: MakeClient) -> None:
    data = {
        "taskId": "tsk_2", "type": "image", "status": 2, "model": "gpt-image-2", "prompt": "p",
        "imageUrls": [], "videoUrl": None, "errorCode": "STORAGE_ERROR", "errorMessage": "could not persist",
        "creditsUsed": 3, "creditsRefunded": True, "updatedAt": "2026-04-22T09:01:00Z",
    }  # fmt: skip
    client, _, _ = make_client(Canned(200, data))
    snap = client.get_task("tsk_2")
    assert snap.task_id == "tsk_2" and snap.status is TaskStatus.FAILED
    assert (snap.error_code, snap.error_message) == ("STORAGE_ERROR", "could not persist")
    assert snap.output_urls == () and snap.credits_refunded is True
    assert snap.updated_at == "2026-04-22T09:01:00Z"


def test_reference_shape_video(make_client: MakeClient) -> None:
    data = {
        "taskId": "tsk_v",
        "type": "video",
        "status": 1,
        "videoUrl": "https://cdn/v.mp4",
        "creditsUsed": "40",
    }
    client, _, _ = make_client(Canned(200, data))
    snap = client.get_task("tsk_v")
    assert snap.kind == "video" and snap.output_urls == ("https://cdn/v.mp4",) and snap.credits_used == 40


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, "PENDING"), ("1", "COMPLETED"), ("failed", "FAILED"), (7, "PENDING")]
)
def test_status_values(make_client: MakeClient, raw: object, expected: str) -> None:
    client, _, _ = make_client(Canned(200, {"taskId": "t", "status": raw, "type": "audio"}))
    snap = client.get_task("t")
    assert snap.status is TaskStatus(expected)
    assert snap.kind is None


def test_snapshot_without_id_uses_the_requested_one(make_client: MakeClient) -> None:
    client, _, _ = make_client(Canned(200, {"status": 0, "creditRefunded": 3}))
    snap = client.get_task("tsk_9")
    assert snap.task_id == "tsk_9" and snap.credits_refunded == 3


# ---- the key never leaks


def test_key_is_not_in_repr_errors_tracebacks_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _, _ = make_client(
        fakes.connection_refused(), Canned(500, {"error": "x"}), fakes.read_timeout(),
        Canned(401, {"error": "Unauthorized"}),
    )  # fmt: skip
    texts = [repr(client), str(client)]
    for call in (lambda: client.get_task("tsk_1"), lambda: client.submit_image(BODY)):
        try:
            call()
        except ProviderError as err:
            texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
    texts += [record.getMessage() for record in caplog.records]
    assert "provider.test" in repr(client)
    assert len(caplog.records) >= 2  # the retries were logged
    for text in texts:
        assert API_KEY not in text
        assert "SECRET" not in text


# ---- construction


def test_default_session_is_pooled_without_urllib3_retries() -> None:
    client = ProviderClient("https://provider.example/", "sk", limits=Limits(pool_size=7))
    adapter = client.session.get_adapter("https://provider.example/api")
    assert isinstance(adapter, HTTPAdapter)
    assert adapter._pool_maxsize == 7  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 0
    assert client.base_url == "https://provider.example"
    client.close()


def test_session_that_resends_posts_is_refused() -> None:
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=Retry(total=3, allowed_methods=None)))
    with pytest.raises(ValueError, match="retries POSTs"):
        ProviderClient("https://provider.example", "sk", session=session)
    safe = requests.Session()
    safe.mount("https://", HTTPAdapter(max_retries=Retry(total=3)))  # default methods exclude POST
    ProviderClient("https://provider.example", "sk", session=safe)


@pytest.mark.parametrize("url", ["ftp://x", "provider.example", "https://user:pw@x", "https://x/?a=1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        ProviderClient(url, "sk")


def test_snapshot_tolerates_odd_values(make_client: MakeClient) -> None:
    data = {
        "taskId": "t", "status": 1, "creditsUsed": "--5", "creditsRefunded": None, "creditRefunded": True,
        "imageUrls": ["https://a/1.png", 7, "", "https://a/1.png"], "outputImageUrls": "not-a-list",
        "videoUrl": "https://a/1.png", "errorCode": 12,
    }  # fmt: skip
    client, _, _ = make_client(Canned(200, data))
    snap = client.get_task("t")
    assert snap.credits_used is None and snap.credits_refunded is True
    assert snap.output_urls == ("https://a/1.png",)
    assert snap.error_code is None


def test_transport_error_messages_name_the_failure(make_client: MakeClient) -> None:
    client, _, _ = make_client(fakes.read_timeout())
    with pytest.raises(OutcomeUnknown, match="ReadTimeout"):
        client.submit_image(BODY)
    client, _, _ = make_client(*(fakes.connection_refused() for _ in range(3)))
    with pytest.raises(ProviderUnreachable, match="NewConnectionError"):
        client.get_task("t")
