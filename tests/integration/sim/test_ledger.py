"""The credit ledger: pre-debit, refunds, and no double spending under concurrency."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from imagejobs_tools.sim import Simulator

from .conftest import KEY_A, KEY_B, START_CREDITS, submit, wait_terminal

pytestmark = pytest.mark.integration


def test_balance_equals_start_minus_spent_plus_refunded(sim: Simulator, http: requests.Session) -> None:
    bodies = [
        {"prompt": "ok", "model": "gpt-image-2"},  # 3
        {"prompt": "ok", "model": "nano-banana-2", "resolution": "2K"},  # 6
        {"prompt": "ok", "model": "nano-banana-pro"},  # 12 (2K default)
        {
            "prompt": "fails",
            "model": "nano-banana-2",
            "providerInput": {"simFailCode": "EMPTY_RESULT"},
        },  # 4, refunded
    ]
    snapshots = [wait_terminal(http, sim, submit(http, sim, body).json()["taskId"]) for body in bodies]
    video = submit(
        http, sim, {"prompt": "v", "model": "kling/v2-1-master-text-to-video", "duration": 5}, kind="video"
    )

    assert [s["creditsUsed"] for s in snapshots] == [3, 6, 12, 4]
    assert video.status_code == 402  # 160 credits > what is left
    stats = sim.admin.key_stats(KEY_A)
    assert stats["spent"] == 25
    assert stats["refunded"] == 4
    assert stats["net"] == 21
    assert stats["balance"] == START_CREDITS - stats["spent"] + stats["refunded"]
    assert stats["byStatus"] == {"pending": 0, "completed": 3, "failed": 1}
    assert sim.admin.key_stats(KEY_B)["spent"] == 0


def test_concurrent_submissions_never_overspend(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(api_keys={KEY_A: 300})  # room for exactly 100 gpt-image-2 tasks

    def one(_: int) -> int:
        with requests.Session() as session:
            return submit(session, sim, {"prompt": "race"}).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(one, range(160)))

    assert statuses.count(200) == 100
    assert statuses.count(402) == 60
    stats = sim.admin.key_stats(KEY_A)
    assert (stats["balance"], stats["tasksCreated"], stats["spent"]) == (0, 100, 300)
    assert len({task["taskId"] for task in sim.admin.tasks()}) == 100


def test_admin_listing_masks_keys(sim: Simulator, http: requests.Session) -> None:
    submit(http, sim, {"prompt": "p"})

    (task,) = sim.admin.tasks()
    stats = sim.admin.stats()

    assert KEY_A not in str(task) and KEY_A not in str(stats)
    assert task["key"] == sim.admin.key_stats(KEY_A)["key"]
