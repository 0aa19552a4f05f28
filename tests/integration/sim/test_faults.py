"""Injected faults: 500s, 429 with Retry-After, failed tasks, lost responses, hangs, slow outputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from imagejobs_tools.sim import FaultConfig, Simulator, SimulatorAdminError

from .conftest import KEY_A, START_CREDITS, auth, submit, wait_terminal

pytestmark = pytest.mark.integration

BODY = {"prompt": "a lighthouse at dusk", "model": "gpt-image-2", "aspectRatio": "1:1"}


def test_submit_500_creates_and_charges_nothing(sim: Simulator, http: requests.Session) -> None:
    sim.admin.set_faults(submit_500_rate=1.0)

    response = submit(http, sim, BODY)

    assert (response.status_code, response.json()) == (500, {"error": "Internal server error"})
    stats = sim.admin.stats()
    assert sim.admin.key_stats(KEY_A)["tasksCreated"] == 0
    assert sim.admin.key_stats(KEY_A)["balance"] == START_CREDITS
    assert stats["faultsInjected"] == {"submit_500_rate": 1}


def test_poll_500_then_recovers(sim: Simulator, http: requests.Session) -> None:
    task_id = submit(http, sim, BODY).json()["taskId"]
    sim.admin.set_faults(poll_500_rate=1.0)

    failing = http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(), timeout=10)
    sim.admin.set_faults(poll_500_rate=0.0)

    assert failing.status_code == 500
    assert failing.json()["error"]
    assert wait_terminal(http, sim, task_id)["status"] == 1


def test_429_carries_retry_after_and_charges_nothing(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(faults=FaultConfig(rate_429=1.0, retry_after=7))

    submitted = submit(http, sim, BODY)
    polled = http.get(f"{sim.url}/api/ai/tasks/tsk_01J9XA5M2R9W4QZC4PYJF3N7ND", headers=auth(), timeout=10)

    for response in (submitted, polled):
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert "error" in response.json()
    assert sim.admin.key_stats(KEY_A)["tasksCreated"] == 0


def test_task_failures_cycle_through_codes_and_are_refunded(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(faults=FaultConfig(task_failure_rate=1.0))

    snapshots = [wait_terminal(http, sim, submit(http, sim, BODY).json()["taskId"]) for _ in range(4)]

    assert [s["errorCode"] for s in snapshots] == [
        "EMPTY_RESULT", "STORAGE_ERROR", "PROVIDER_NSFW_BLOCKED", "EMPTY_RESULT",
    ]  # fmt: skip
    assert all(s["status"] == 2 and s["creditRefunded"] is True and s["errorMessage"] for s in snapshots)
    stats = sim.admin.key_stats(KEY_A)
    assert (stats["spent"], stats["refunded"], stats["balance"]) == (12, 12, START_CREDITS)
    assert stats["byStatus"] == {"pending": 0, "completed": 0, "failed": 4}


def test_lost_response_creates_and_charges_the_task_but_sends_nothing(
    sim: Simulator, http: requests.Session
) -> None:
    sim.admin.set_faults(lost_response_rate=1.0)

    with pytest.raises(requests.ConnectionError):
        submit(http, sim, BODY)

    tasks = sim.admin.tasks()
    assert len(tasks) == 1
    assert tasks[0]["injectedFaults"] == ["lost_response"]
    assert sim.admin.key_stats(KEY_A)["spent"] == 3
    # the task really exists: its owner can poll it to completion
    sim.admin.set_faults(lost_response_rate=0.0)
    assert wait_terminal(http, sim, tasks[0]["taskId"])["status"] == 1


def test_hanging_submission_times_out_on_the_client_after_being_charged(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(faults=FaultConfig(hang_rate=1.0, hang_seconds=60))

    with pytest.raises(requests.ReadTimeout):
        http.post(f"{sim.url}/api/ai/image/generate", json=BODY, headers=auth(), timeout=(2, 0.3))

    tasks = sim.admin.tasks()
    assert [t["injectedFaults"] for t in tasks] == [["hang"]]
    assert sim.admin.key_stats(KEY_A)["spent"] == 3
    with pytest.raises(requests.ReadTimeout):
        http.get(f"{sim.url}/api/ai/tasks/{tasks[0]['taskId']}", headers=auth(), timeout=(2, 0.3))


def test_slow_outputs_still_deliver_every_byte(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(faults=FaultConfig(slow_output_bytes_per_second=400_000))
    done = wait_terminal(
        http, sim, submit(http, sim, {**BODY, "providerInput": {"simOutputBytes": 60_000}}).json()["taskId"]
    )

    response = http.get(done["outputImageUrls"][0], timeout=10)

    assert response.status_code == 200
    assert len(response.content) == int(response.headers["Content-Length"]) == 60_000


def test_seeded_fault_draws_repeat_across_runs(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    outcomes = []
    for _ in range(2):
        sim = make_sim(seed=1234, faults=FaultConfig(submit_500_rate=0.5))
        outcomes.append([submit(http, sim, BODY).status_code for _ in range(16)])

    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 500}


def test_bad_fault_settings_are_rejected_with_the_reason(sim: Simulator) -> None:
    with pytest.raises(SimulatorAdminError, match="hang_rate"):
        sim.admin.set_faults(hang_rate=2)
    with pytest.raises(SimulatorAdminError, match="unknown fault setting"):
        sim.admin.set_faults(explode_rate=0.5)


def test_reset_forgets_tasks_and_restores_faults_and_credits(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim()
    submit(http, sim, BODY)
    sim.admin.set_faults(submit_500_rate=1.0)
    sim.admin.set_credits(KEY_A, 1)

    sim.admin.reset()

    assert sim.admin.tasks() == []
    assert sim.admin.key_stats(KEY_A)["balance"] == START_CREDITS
    assert submit(http, sim, BODY).status_code == 200
