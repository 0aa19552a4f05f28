"""The quickstart's curl requests, replayed over real HTTP, and the documented response shapes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import requests

from imagejobs_tools.sim import Simulator

from .conftest import KEY_A, KEY_B, START_CREDITS, auth, submit, wait_terminal

pytestmark = pytest.mark.integration

TASK_ID = re.compile(r"^tsk_[0-9A-HJKMNP-TV-Z]{26}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
QUICKSTART_TEXT_TO_IMAGE = {
    "prompt": (
        "A premium skincare bottle on warm ivory paper, embossed serif label, soft editorial side light"
    ),
    "model": "gpt-image-2",
    "aspectRatio": "4:5",
}
REFERENCE_KEYS = {
    "taskId", "type", "status", "model", "prompt", "imageUrls", "videoUrl", "errorCode", "errorMessage",
    "creditsUsed", "creditsRefunded", "createdAt", "updatedAt",
}  # fmt: skip


def test_text_to_image_submit_returns_task_id_pending_and_credits(
    sim: Simulator, http: requests.Session
) -> None:
    response = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"taskId", "status", "creditsUsed"}
    assert TASK_ID.match(body["taskId"])
    assert body["status"] == 0
    assert body["creditsUsed"] == 3


def test_quickstart_poll_shows_pending_then_completed_snapshot(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(latency=(600, 600))
    task_id = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE).json()["taskId"]

    pending = http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(), timeout=10).json()
    assert pending == {
        "id": task_id,
        "type": "image",
        "status": 0,
        "createdAt": pending["createdAt"],
        "completedAt": None,
        "creditsUsed": 3,
        "creditRefunded": False,
    }
    assert ISO.match(pending["createdAt"])

    assert sim.admin.release(task_id) == 1
    done = wait_terminal(http, sim, task_id)
    assert set(done) == {"id", "type", "status", "outputImageUrls", "createdAt", "completedAt",
                         "creditsUsed", "creditRefunded"}  # fmt: skip
    assert done["status"] == 1
    assert ISO.match(done["completedAt"])
    assert done["completedAt"] >= done["createdAt"]
    assert done["outputImageUrls"] == [f"{sim.url}/files/{task_id}/0.png"]
    assert done["creditRefunded"] is False


def test_reference_shape_pending_and_completed(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim(shape="reference", latency=(600, 600))
    task_id = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE).json()["taskId"]

    pending = http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(), timeout=10).json()
    assert set(pending) == REFERENCE_KEYS
    assert (pending["taskId"], pending["status"], pending["imageUrls"], pending["videoUrl"]) == (
        task_id,
        0,
        [],
        None,
    )
    assert pending["model"] == "gpt-image-2"
    assert pending["prompt"] == QUICKSTART_TEXT_TO_IMAGE["prompt"]

    sim.admin.release(task_id)
    done = wait_terminal(http, sim, task_id)
    assert set(done) == REFERENCE_KEYS
    assert done["status"] == 1
    assert done["imageUrls"] == [f"{sim.url}/files/{task_id}/0.png"]
    assert (done["errorCode"], done["errorMessage"], done["creditsRefunded"]) == (None, None, False)
    assert ISO.match(done["updatedAt"])


def test_admin_config_switches_the_snapshot_shape_at_run_time(sim: Simulator, http: requests.Session) -> None:
    task_id = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE).json()["taskId"]
    assert "id" in wait_terminal(http, sim, task_id)

    sim.admin.configure(shape="reference")

    assert wait_terminal(http, sim, task_id)["taskId"] == task_id


def test_image_to_image_quickstart_request(sim: Simulator, http: requests.Session, input_server) -> None:  # type: ignore[no-untyped-def]
    body = {
        "prompt": "Keep the bottle shape, replace the background with matte ivory paper",
        "model": "gpt-image-2",
        "inputImageUrls": [f"{input_server.url}/in/ok.png"],
        "aspectRatio": "4:5",
    }
    response = submit(http, sim, body)
    assert response.status_code == 200
    assert wait_terminal(http, sim, response.json()["taskId"])["status"] == 1


@pytest.mark.parametrize("shape", ["quickstart", "reference"])
def test_failed_task_carries_error_code_and_is_refunded(
    make_sim: Callable[..., Simulator], http: requests.Session, shape: str
) -> None:
    sim = make_sim(shape=shape)
    body = {**QUICKSTART_TEXT_TO_IMAGE, "providerInput": {"simFailCode": "STORAGE_ERROR"}}
    task_id = submit(http, sim, body).json()["taskId"]

    failed = wait_terminal(http, sim, task_id)

    assert failed["status"] == 2
    assert failed["errorCode"] == "STORAGE_ERROR"
    assert failed["errorMessage"]
    assert failed["creditsUsed"] == 3
    assert failed["creditRefunded" if shape == "quickstart" else "creditsRefunded"] is True
    assert sim.admin.key_stats(KEY_A)["balance"] == START_CREDITS


@pytest.mark.parametrize("shape", ["quickstart", "reference"])
def test_video_task_completes_with_an_mp4(
    make_sim: Callable[..., Simulator], http: requests.Session, shape: str
) -> None:
    sim = make_sim(shape=shape)
    body = {"prompt": "a drone shot", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 8}
    response = submit(http, sim, body, kind="video")
    assert response.status_code == 200
    assert response.json()["creditsUsed"] == 64

    done = wait_terminal(http, sim, response.json()["taskId"])

    assert done["type"] == "video"
    url = done["outputImageUrls"][0] if shape == "quickstart" else done["videoUrl"]
    assert url.endswith("/0.mp4")
    if shape == "reference":
        assert done["imageUrls"] == []
    video = http.get(url, timeout=10)
    assert video.headers["Content-Type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    assert b"moov" in video.content and b"mdat" in video.content


def test_error_statuses_have_the_documented_bodies(sim: Simulator, http: requests.Session) -> None:
    no_key = http.post(f"{sim.url}/api/ai/image/generate", json=QUICKSTART_TEXT_TO_IMAGE, timeout=10)
    wrong_key = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE, key="sk_live_not_a_key")
    basic = http.get(f"{sim.url}/api/ai/tasks/tsk_x", headers={"Authorization": f"Basic {KEY_A}"}, timeout=10)
    invalid = submit(http, sim, {"model": "gpt-image-2"})

    assert (no_key.status_code, no_key.json()) == (401, {"error": "Unauthorized"})
    assert (wrong_key.status_code, wrong_key.json()) == (401, {"error": "Unauthorized"})
    assert (basic.status_code, basic.json()) == (401, {"error": "Unauthorized"})
    assert invalid.status_code == 400
    assert invalid.json() == {
        "error": "Invalid request",
        "details": {"formErrors": [], "fieldErrors": {"prompt": ["Prompt is required"]}},
    }


def test_another_keys_task_is_not_found(sim: Simulator, http: requests.Session) -> None:
    task_id = submit(http, sim, QUICKSTART_TEXT_TO_IMAGE, key=KEY_A).json()["taskId"]

    other = http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(KEY_B), timeout=10)
    unknown = http.get(
        f"{sim.url}/api/ai/tasks/tsk_01J9XA5M2R9W4QZC4PYJF3N7ND", headers=auth(KEY_A), timeout=10
    )
    garbage = http.get(f"{sim.url}/api/ai/tasks/../../etc", headers=auth(KEY_A), timeout=10)

    assert (other.status_code, other.json()) == (404, {"error": "Task not found"})
    assert unknown.status_code == 404
    assert garbage.status_code == 404
    assert http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(KEY_A), timeout=10).status_code == 200


def test_insufficient_credits_is_402_with_required_and_charges_nothing(
    sim: Simulator, http: requests.Session
) -> None:
    sim.admin.set_credits(KEY_A, 15)

    pro_4k = submit(http, sim, {"prompt": "p", "model": "nano-banana-pro", "resolution": "4K"})
    cheap = submit(http, sim, {"prompt": "p", "model": "gpt-image-2"})

    assert (pro_4k.status_code, pro_4k.json()) == (402, {"error": "Insufficient credits", "required": 20})
    assert cheap.status_code == 200
    stats = sim.admin.key_stats(KEY_A)
    assert (stats["balance"], stats["tasksCreated"], stats["spent"]) == (12, 1, 3)


def test_pending_task_stays_pending_until_its_latency_elapses(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim()
    slow = submit(http, sim, {"prompt": "p", "providerInput": {"simLatencySeconds": 600}}).json()["taskId"]
    fast = submit(http, sim, {"prompt": "p"}).json()["taskId"]

    assert wait_terminal(http, sim, fast)["status"] == 1
    time.sleep(0.05)
    assert http.get(f"{sim.url}/api/ai/tasks/{slow}", headers=auth(), timeout=10).json()["status"] == 0


def test_stop_also_ends_kept_alive_connections(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim()
    assert (
        submit(http, sim, QUICKSTART_TEXT_TO_IMAGE).status_code == 200
    )  # the session now holds a connection

    sim.stop()

    with pytest.raises(requests.ConnectionError):
        submit(http, sim, QUICKSTART_TEXT_TO_IMAGE)


def test_admin_config_rejects_bad_values_with_the_field(sim: Simulator, http: requests.Session) -> None:
    response = http.post(f"{sim.url}/_sim/config", json={"shape": "xml", "latency": [3, 1]}, timeout=10)

    assert response.status_code == 400
    assert set(response.json()["details"]["fieldErrors"]) == {"shape", "latency"}
