"""Real sockets, real requests/urllib3: each transport failure lands in the right error class."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from imagejobs.provider import (
    Limits,
    OutcomeUnknown,
    ProviderClient,
    ProviderUnreachable,
    RetryPolicy,
    TaskStatus,
    Timeout,
)

from .rawserver import (
    RawServer,
    close_without_answer,
    refused_url,
    reset,
    respond,
    truncated_body,
)

pytestmark = pytest.mark.integration

BODY = {"prompt": "a red fox", "model": "gpt-image-2"}
ACCEPTED = respond(200, {"taskId": "tsk_1", "status": 0, "creditsUsed": 3})
PENDING = respond(200, {"id": "tsk_1", "status": 0})


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        server.stop()


def client_for(url: str, **kwargs: object) -> ProviderClient:
    options: dict[str, object] = {"timeout": Timeout(connect=0.5, read=0.3), "sleep": lambda _s: None}
    options.update(kwargs)
    return ProviderClient(url, "sk_test_key", **options)  # type: ignore[arg-type]


def test_connection_refused_is_unreachable_and_retried() -> None:
    sleeps: list[float] = []
    client = client_for(refused_url(), sleep=sleeps.append, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(ProviderUnreachable):
        client.submit_image(BODY)
    assert len(sleeps) == 2  # three attempts: it is safe to resend what never arrived


@pytest.mark.parametrize("behaviour_name", ["close", "reset", "truncated", "hang", "headers_then_hang"])
def test_lost_answers_to_a_submission_are_outcome_unknown_and_sent_once(
    servers: list[RawServer], behaviour_name: str
) -> None:
    server = RawServer(hang_seconds=2)
    servers.append(server)
    behaviours = {
        "close": close_without_answer,
        "reset": reset,
        "truncated": truncated_body,
        "hang": server.hang,
        "headers_then_hang": server.headers_then_hang,
    }
    server.script = [behaviours[behaviour_name], ACCEPTED, ACCEPTED]
    client = client_for(server.url, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit_image(BODY)
    assert caught.value.submission and not caught.value.retryable
    assert server.methods() == ["POST"]


@pytest.mark.parametrize("behaviour_name", ["close", "reset", "truncated", "hang"])
def test_lost_answers_to_a_poll_are_retried(servers: list[RawServer], behaviour_name: str) -> None:
    server = RawServer(hang_seconds=2)
    servers.append(server)
    behaviours = {
        "close": close_without_answer,
        "reset": reset,
        "truncated": truncated_body,
        "hang": server.hang,
    }
    server.script = [behaviours[behaviour_name], PENDING]
    client = client_for(server.url)
    assert client.get_task("tsk_1").status is TaskStatus.PENDING
    assert server.methods() == ["GET", "GET"]


def test_500_then_success_over_real_http(servers: list[RawServer]) -> None:
    server = RawServer(respond(500, {"error": "Internal error"}), ACCEPTED)
    servers.append(server)
    assert client_for(server.url).submit_image(BODY).task_id == "tsk_1"
    assert server.methods() == ["POST", "POST"]
    assert b"authorization: bearer sk_test_key" in server.requests[0].lower()


@pytest.mark.parametrize("fresh_after_idle", [4.0, None])
def test_submission_after_idle_uses_a_fresh_connection(
    servers: list[RawServer], fresh_after_idle: float | None
) -> None:
    """The keep-alive race: with the idle check the POST goes out on a new connection."""
    server = RawServer()
    servers.append(server)
    server.script = [server.keepalive_then_drop, ACCEPTED]
    now = [100.0]
    client = client_for(
        server.url, clock=lambda: now[0], limits=Limits(fresh_connection_after_idle=fresh_after_idle)
    )
    assert client.submit_image(BODY).task_id == "tsk_0"
    now[0] += 30  # idle far longer than a server keeps a connection open
    if fresh_after_idle is None:
        with pytest.raises(OutcomeUnknown):
            client.submit_image(BODY)
    else:
        assert client.submit_image(BODY).task_id == "tsk_1"
    assert server.methods() == ["POST", "POST"]
