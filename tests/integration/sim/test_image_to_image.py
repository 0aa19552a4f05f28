"""Image-to-image: the simulator fetches every input URL and fails (refunded) when it cannot."""

from __future__ import annotations

import pytest
import requests

from imagejobs_tools.sim import Simulator

from .conftest import KEY_A, START_CREDITS, InputServer, submit, wait_terminal

pytestmark = pytest.mark.integration


def run(http: requests.Session, sim: Simulator, urls: list[str]) -> dict[str, object]:
    response = submit(http, sim, {"prompt": "edit it", "model": "gpt-image-2", "inputImageUrls": urls})
    assert response.status_code == 200, response.text
    return wait_terminal(http, sim, response.json()["taskId"])


def test_presigned_style_urls_are_fetched_and_recorded(
    sim: Simulator, http: requests.Session, input_server: InputServer
) -> None:
    presigned = f"{input_server.url}/in/ok.png?X-Amz-Signature=abc123&X-Amz-Expires=900"
    jpeg = f"{input_server.url}/in/photo.jpg"

    done = run(http, sim, [presigned, jpeg])

    assert done["status"] == 1
    assert input_server.requested == ["/in/ok.png?X-Amz-Signature=abc123&X-Amz-Expires=900", "/in/photo.jpg"]
    (task,) = sim.admin.tasks()
    assert [(f["url"], f["ok"], f["contentType"]) for f in task["inputsFetched"]] == [
        (presigned, True, "image/png"),
        (jpeg, True, "image/jpeg"),
    ]


@pytest.mark.parametrize(
    ("path", "code"),
    [("/in/notes.txt", "INPUT_NOT_IMAGE"), ("/in/missing.png", "INPUT_FETCH_FAILED")],
)
def test_bad_inputs_fail_the_task_and_refund(
    sim: Simulator, http: requests.Session, input_server: InputServer, path: str, code: str
) -> None:
    done = run(http, sim, [f"{input_server.url}/in/ok.png", f"{input_server.url}{path}"])

    assert done["status"] == 2
    assert done["errorCode"] == code
    assert "Input image 2" in str(done["errorMessage"])
    assert done["creditRefunded"] is True
    assert sim.admin.key_stats(KEY_A)["balance"] == START_CREDITS


def test_unreachable_input_fails_with_fetch_failed(
    sim: Simulator, http: requests.Session, closed_port_url: str
) -> None:
    done = run(http, sim, [closed_port_url])

    assert (done["status"], done["errorCode"]) == (2, "INPUT_FETCH_FAILED")
    (task,) = sim.admin.tasks()
    assert task["inputsFetched"][0]["ok"] is False


def test_too_many_reference_images_is_a_400(sim: Simulator, http: requests.Session) -> None:
    urls = [f"http://127.0.0.1:9/{n}.png" for n in range(5)]

    response = submit(http, sim, {"prompt": "p", "model": "gpt-image-2", "inputImageUrls": urls})

    assert response.status_code == 400
    assert response.json()["details"]["fieldErrors"] == {
        "inputImageUrls": ["At most 4 reference images for gpt-image-2"]
    }
    assert sim.admin.tasks() == []
