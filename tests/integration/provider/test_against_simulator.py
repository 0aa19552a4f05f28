"""ProviderClient against the provider simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
import requests
from imagejobs import catalog
from imagejobs.provider import (
    InsufficientCredits,
    OutcomeUnknown,
    ProviderClient,
    ProviderRejected,
    ProviderServerError,
    ProviderUnauthorized,
    RateLimited,
    RetryPolicy,
    TaskNotFound,
    TaskSnapshot,
    TaskStatus,
    Timeout,
)

from imagejobs_tools.sim import Simulator

from .conftest import KEY_A, KEY_B

pytestmark = pytest.mark.integration

# The simulator answers in milliseconds: short timeouts, near-instant backoff.
FAST_TIMEOUT = Timeout(connect=1.0, read=5.0)
FAST_RETRY = RetryPolicy(backoff_base=0.01)

IMAGE = {"prompt": "a lighthouse at dusk", "model": "gpt-image-2", "aspectRatio": "16:9"}


def make_client(sim: Simulator, key: str = KEY_A, **kwargs: Any) -> ProviderClient:
    options: dict[str, Any] = {"timeout": FAST_TIMEOUT, "retry": FAST_RETRY}
    options.update(kwargs)
    return ProviderClient(sim.url, key, **options)


def wait_terminal(client: ProviderClient, task_id: str, limit: float = 15.0) -> TaskSnapshot:
    deadline = time.monotonic() + limit
    while True:
        snap = client.get_task(task_id)
        if snap.is_terminal:
            return snap
        assert time.monotonic() < deadline, f"task {task_id} still pending after {limit}s"
        time.sleep(0.02)


def key_stats(sim: Simulator, key: str = KEY_A) -> dict[str, Any]:
    return sim.admin.key_stats(key)


def submit_requests(sim: Simulator) -> int:
    counters = sim.admin.stats()["requests"]
    return sum(n for name, n in counters.items() if name.startswith("submit"))


@pytest.mark.parametrize("shape", ["quickstart", "reference"])
def test_image_submit_then_poll_to_completion(sim: Simulator, shape: str) -> None:
    sim.admin.configure(shape=shape)
    client = make_client(sim)
    submission = client.submit_image(IMAGE)
    assert submission.status is TaskStatus.PENDING and submission.credits_used == 3
    snap = wait_terminal(client, submission.task_id)
    assert snap.task_id == submission.task_id and snap.kind == "image"
    assert snap.status is TaskStatus.COMPLETED and len(snap.output_urls) == 1
    assert snap.credits_used == 3 and snap.credits_refunded is False
    output = requests.get(snap.output_urls[0], timeout=5)
    assert output.status_code == 200 and output.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert key_stats(sim)["spent"] == 3


@pytest.mark.parametrize("shape", ["quickstart", "reference"])
def test_video_submit_then_poll_to_completion(sim: Simulator, shape: str) -> None:
    sim.admin.configure(shape=shape, video_latency=(0.0, 0.05))
    client = make_client(sim)
    body = {"prompt": "surf at dawn", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 8}
    submission = client.submit_video(body)
    snap = wait_terminal(client, submission.task_id)
    assert snap.status is TaskStatus.COMPLETED and snap.kind == "video"
    assert len(snap.output_urls) == 1
    assert snap.credits_used == submission.credits_used == key_stats(sim)["spent"]


def test_failed_task_is_refunded(sim: Simulator) -> None:
    sim.admin.set_faults(task_failure_rate=1.0)
    client = make_client(sim)
    snap = wait_terminal(client, client.submit_image(IMAGE).task_id)
    assert snap.status is TaskStatus.FAILED
    assert snap.error_code in ("EMPTY_RESULT", "STORAGE_ERROR", "PROVIDER_NSFW_BLOCKED")
    assert snap.credits_refunded is True and snap.output_urls == ()


def test_unknown_key_is_401_and_creates_nothing(sim: Simulator) -> None:
    client = make_client(sim, key="sk_test_nobody")
    with pytest.raises(ProviderUnauthorized) as caught:
        client.submit_image(IMAGE)
    assert caught.value.status_code == 401 and not caught.value.retryable
    assert sim.admin.stats()["tasks"] == 0


def test_insufficient_credits_is_402_with_required(sim: Simulator) -> None:
    sim.admin.set_credits(KEY_A, 2)
    with pytest.raises(InsufficientCredits) as caught:
        make_client(sim).submit_image({"prompt": "p", "model": "nano-banana-pro"})
    assert caught.value.required == 12
    assert key_stats(sim)["tasksCreated"] == 0 and key_stats(sim)["balance"] == 2


def test_another_keys_task_is_not_found(sim: Simulator) -> None:
    task_id = make_client(sim, KEY_A).submit_image(IMAGE).task_id
    with pytest.raises(TaskNotFound) as caught:
        make_client(sim, KEY_B).get_task(task_id)
    assert caught.value.task_id == task_id
    assert make_client(sim, KEY_A).get_task(task_id).task_id == task_id


def test_provider_400_field_errors_come_through(sim: Simulator) -> None:
    # Valid by the catalog (the doc's common durations), refused by this provider's model rules.
    body = {"prompt": "p", "model": "sora-2-text-to-video", "inputMode": "text_to_video", "duration": 5}
    assert catalog.validate_generation_request(body, "video") == {}
    with pytest.raises(ProviderRejected) as caught:
        make_client(sim).submit_video(body)
    assert not caught.value.local and caught.value.status_code == 400
    assert list(caught.value.field_errors) == ["duration"]
    assert key_stats(sim)["tasksCreated"] == 0


def test_submit_500_is_retried_then_succeeds_with_one_charge(sim: Simulator) -> None:
    sim.admin.set_faults(submit_500_rate=1.0)
    sleeps: list[float] = []

    def sleep_and_heal(seconds: float) -> None:
        sleeps.append(seconds)
        sim.admin.set_faults(submit_500_rate=0.0)

    submission = make_client(sim, sleep=sleep_and_heal).submit_image(IMAGE)
    assert len(sleeps) == 1
    assert submit_requests(sim) == 2
    assert key_stats(sim)["tasksCreated"] == 1 and key_stats(sim)["spent"] == submission.credits_used


def test_submit_500_exhausts_attempts(sim: Simulator) -> None:
    sim.admin.set_faults(submit_500_rate=1.0)
    with pytest.raises(ProviderServerError) as caught:
        make_client(sim, sleep=lambda _s: None, retry=replace(FAST_RETRY, max_attempts=3)).submit_image(IMAGE)
    assert caught.value.status == 500 and caught.value.retryable
    assert submit_requests(sim) == 3 and key_stats(sim)["tasksCreated"] == 0


def test_poll_500_is_retried(sim: Simulator) -> None:
    client = make_client(sim)
    task_id = client.submit_image(IMAGE).task_id
    sim.admin.set_faults(poll_500_rate=1.0)

    def heal(_seconds: float) -> None:
        sim.admin.set_faults(poll_500_rate=0.0)

    assert make_client(sim, sleep=heal).get_task(task_id).task_id == task_id
    assert sim.admin.stats()["requests"]["poll"] == 2


def test_429_retry_after_is_honoured(sim: Simulator) -> None:
    sim.admin.set_faults(rate_429=1.0, retry_after=2)
    sleeps: list[float] = []

    def sleep_and_heal(seconds: float) -> None:
        sleeps.append(seconds)
        sim.admin.set_faults(rate_429=0.0)

    make_client(sim, sleep=sleep_and_heal).submit_image(IMAGE)
    assert sleeps == [2.0]
    assert key_stats(sim)["tasksCreated"] == 1


def test_429_beyond_the_cap_is_raised_without_waiting(sim: Simulator) -> None:
    sim.admin.set_faults(rate_429=1.0, retry_after=120)
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as caught:
        make_client(sim, sleep=sleeps.append, retry=replace(FAST_RETRY, max_retry_after=30)).submit_image(
            IMAGE
        )
    assert caught.value.retry_after == 120.0 and sleeps == []
    assert key_stats(sim)["tasksCreated"] == 0


def test_lost_response_is_outcome_unknown_with_exactly_one_charge(sim: Simulator) -> None:
    sim.admin.set_faults(lost_response_rate=1.0)
    sleeps: list[float] = []
    with pytest.raises(OutcomeUnknown) as caught:
        make_client(sim, sleep=sleeps.append, retry=replace(FAST_RETRY, max_attempts=5)).submit_image(IMAGE)
    assert caught.value.submission and not caught.value.retryable
    assert sleeps == [] and submit_requests(sim) == 1
    stats = key_stats(sim)
    assert stats["tasksCreated"] == 1 and stats["spent"] == 3 and stats["balance"] == 997
    [task] = sim.admin.tasks()
    assert "lost_response" in task["injectedFaults"]


def test_hang_is_outcome_unknown_on_submit_and_retried_on_poll(sim: Simulator) -> None:
    sim.admin.set_faults(hang_rate=1.0, hang_seconds=3)
    client = make_client(
        sim,
        sleep=lambda _s: None,
        retry=replace(FAST_RETRY, max_attempts=5),
        timeout=replace(FAST_TIMEOUT, read=0.3),
    )
    with pytest.raises(OutcomeUnknown):
        client.submit_image(IMAGE)
    assert submit_requests(sim) == 1
    assert key_stats(sim)["tasksCreated"] == 1 and key_stats(sim)["spent"] == 3
    [task] = sim.admin.tasks()

    def heal(_seconds: float) -> None:
        sim.admin.set_faults(hang_rate=0.0)

    poller = make_client(sim, sleep=heal, timeout=replace(FAST_TIMEOUT, read=0.3))
    snap = poller.get_task(task["taskId"])
    assert snap.task_id == task["taskId"]
    assert sim.admin.stats()["requests"]["poll"] == 2


def test_every_catalog_model_is_accepted_by_the_simulator(sim: Simulator) -> None:
    """A minimal body valid by the catalog submits (guards catalog/simulator drift)."""
    sim.admin.set_credits(KEY_A, 1_000_000)
    client = make_client(sim)
    source = wait_terminal(client, client.submit_image(IMAGE).task_id).output_urls[0]
    for spec in catalog.model_table().values():
        body: dict[str, Any] = {"prompt": "a calm sea", "model": spec.name}
        if spec.kind == "image":
            assert client.submit_image(body).task_id, spec.name
            continue
        mode = spec.input_modes[0] if len(spec.input_modes) == 1 else "image_to_video"
        body["inputMode"] = mode
        if mode == "image_to_video":
            body["inputImageUrls"] = [source]
        assert catalog.validate_generation_request(body, "video") == {}, spec.name
        assert client.submit_video(body).task_id, spec.name


def test_pooled_connection_is_reused_within_a_burst(sim: Simulator) -> None:
    client = make_client(sim)
    task_id = client.submit_image(IMAGE).task_id
    for _ in range(5):
        client.get_task(task_id)
    client.submit_image(IMAGE)
    adapter = client.session.get_adapter(sim.url)
    [pool] = adapter.poolmanager.pools._container.values()  # type: ignore[attr-defined]
    assert pool.num_connections == 1
