"""Output files are real images that decode, match the aspect ratio, and are deterministic."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import requests
from PIL import Image

from imagejobs_tools.sim import Simulator

from .conftest import submit, wait_terminal

pytestmark = pytest.mark.integration

RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9"]


def output_urls(http: requests.Session, sim: Simulator, body: dict[str, object]) -> list[str]:
    response = submit(http, sim, body)
    assert response.status_code == 200, response.text
    done = wait_terminal(http, sim, response.json()["taskId"])
    assert done["status"] == 1
    urls: list[str] = done["outputImageUrls"]
    return urls


def fetch_image(http: requests.Session, url: str) -> tuple[bytes, Image.Image]:
    response = http.get(url, timeout=10)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return response.content, image


@pytest.mark.parametrize("ratio", RATIOS)
def test_png_dimensions_match_the_aspect_ratio(sim: Simulator, http: requests.Session, ratio: str) -> None:
    (url,) = output_urls(http, sim, {"prompt": "ratio check", "aspectRatio": ratio})

    _, image = fetch_image(http, url)

    across, down = (int(part) for part in ratio.split(":"))
    width, height = image.size
    assert image.format == "PNG"
    assert width * down == height * across
    assert min(width, height) >= 512


def test_auto_and_omitted_ratio_are_square(sim: Simulator, http: requests.Session) -> None:
    for body in ({"prompt": "a", "aspectRatio": "auto"}, {"prompt": "a"}):
        (url,) = output_urls(http, sim, body)
        assert fetch_image(http, url)[1].size == (1024, 1024)


def test_same_prompt_gives_same_bytes_and_other_prompts_differ(
    sim: Simulator, http: requests.Session
) -> None:
    first = fetch_image(http, output_urls(http, sim, {"prompt": "a red fox", "aspectRatio": "3:2"})[0])[0]
    again = fetch_image(http, output_urls(http, sim, {"prompt": "a red fox", "aspectRatio": "3:2"})[0])[0]
    other = fetch_image(http, output_urls(http, sim, {"prompt": "a blue fox", "aspectRatio": "3:2"})[0])[0]

    assert first == again
    assert first != other


def test_image_content_comes_from_the_prompt_not_a_constant(sim: Simulator, http: requests.Session) -> None:
    images = [
        fetch_image(http, output_urls(http, sim, {"prompt": prompt})[0])[1].convert("RGB")
        for prompt in ("one", "two")
    ]

    top_left = [image.getpixel((0, 0)) for image in images]
    assert top_left[0] != top_left[1]
    # a gradient, not a flat fill
    assert images[0].getpixel((0, 0)) != images[0].getpixel((0, images[0].height - 1))


def test_jpeg_output_decodes_with_the_right_size(sim: Simulator, http: requests.Session) -> None:
    (url,) = output_urls(http, sim, {"prompt": "jpeg please", "aspectRatio": "16:9",
                                      "providerInput": {"simOutputFormat": "jpeg"}})  # fmt: skip

    data, image = fetch_image(http, url)

    assert url.endswith(".jpg")
    assert data[:3] == b"\xff\xd8\xff"
    assert (image.format, image.size) == ("JPEG", (1344, 756))


def test_several_outputs_are_served(sim: Simulator, http: requests.Session) -> None:
    urls = output_urls(http, sim, {"prompt": "many", "providerInput": {"simOutputCount": 3}})

    assert [url.rsplit("/", 1)[1] for url in urls] == ["0.png", "1.png", "2.png"]
    contents = {fetch_image(http, url)[0] for url in urls}
    assert len(contents) == 3


def test_large_output_is_a_valid_png_of_the_requested_size(sim: Simulator, http: requests.Session) -> None:
    (url,) = output_urls(http, sim, {"prompt": "big", "providerInput": {"simOutputBytes": 3_000_001}})

    head = http.head(url, timeout=10)
    data, image = fetch_image(http, url)

    assert int(head.headers["Content-Length"]) == len(data) == 3_000_001
    assert image.size == (1024, 1024)
    Image.open(io.BytesIO(data)).verify()  # every chunk CRC, the padding included


def test_outputs_of_pending_or_unknown_tasks_are_404(
    make_sim: Callable[..., Simulator], http: requests.Session
) -> None:
    sim = make_sim()
    task_id = submit(http, sim, {"prompt": "p", "providerInput": {"simLatencySeconds": 600}}).json()["taskId"]

    assert http.get(f"{sim.url}/files/{task_id}/0.png", timeout=10).status_code == 404
    assert http.get(f"{sim.url}/files/tsk_01J9XA5M2R9W4QZC4PYJF3N7ND/0.png", timeout=10).status_code == 404
    assert http.get(f"{sim.url}/files/nonsense", timeout=10).status_code == 404
