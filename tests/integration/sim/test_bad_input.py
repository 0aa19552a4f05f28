"""Bad input always gets the documented 400 shape naming the problem: never a 500, never a hang."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from imagejobs_tools.sim import Simulator

from .conftest import KEY_A, auth, submit

pytestmark = pytest.mark.integration

IMAGE_URL = "/api/ai/image/generate"
POST_HEAD = b"POST /api/ai/image/generate HTTP/1.1\r\nHost: x\r\n"


def post_raw(
    http: requests.Session, sim: Simulator, data: bytes | Iterator[bytes], path: str = IMAGE_URL
) -> requests.Response:
    headers = {**auth(), "Content-Type": "application/json"}
    return http.post(sim.url + path, data=data, headers=headers, timeout=(3, 10))


def assert_invalid(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "Invalid request"
    assert set(body["details"]) == {"formErrors", "fieldErrors"}
    assert body["details"]["formErrors"] or body["details"]["fieldErrors"]
    return body["details"]


@pytest.fixture(autouse=True)
def no_internal_errors(sim: Simulator) -> Iterator[None]:
    yield
    assert sim.admin.stats()["internalErrors"] == 0
    assert sim.admin.key_stats(KEY_A)["tasksCreated"] == 0


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        ({}, "prompt", "Prompt is required"),
        ({"prompt": "   "}, "prompt", "Prompt is required"),
        ({"prompt": 5}, "prompt", "Expected string, received number"),
        ({"prompt": ["a"]}, "prompt", "Expected string, received array"),
        ({"prompt": "x" * 20_001}, "prompt", "at most 20000"),
        ({"prompt": "p", "model": 3}, "model", "Expected string"),
        ({"prompt": "p", "model": "dall-e-9"}, "model", "Unknown model"),
        ({"prompt": "p", "model": "veo3"}, "model", "video model"),
        ({"prompt": "p", "aspectRatio": "7:3"}, "aspectRatio", "Invalid aspect ratio"),
        ({"prompt": "p", "aspectRatio": 1.5}, "aspectRatio", "Expected string"),
        ({"prompt": "p", "inputImageUrls": "http://x/a.png"}, "inputImageUrls", "Expected array"),
        ({"prompt": "p", "inputImageUrls": [7]}, "inputImageUrls", "expected string"),
        ({"prompt": "p", "inputImageUrls": ["ftp://x/a.png"]}, "inputImageUrls", "http(s) URL"),
        ({"prompt": "p", "providerInput": []}, "providerInput", "Expected object"),
        ({"prompt": "p", "providerInput": {"simOutputBytes": -1}}, "providerInput", "simOutputBytes"),
        ({"prompt": "p", "model": "nano-banana-2", "resolution": "8K"}, "resolution", "Invalid resolution"),
        ({"prompt": "p" * 5001, "model": "google/nano-banana"}, "prompt", "at most 5000"),
    ],
)
def test_field_errors_name_the_field_and_reason(
    sim: Simulator, http: requests.Session, body: dict[str, Any], field: str, message_part: str
) -> None:
    details = assert_invalid(submit(http, sim, body))

    assert details["formErrors"] == []
    assert any(message_part in message for message in details["fieldErrors"][field]), details


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        ({"prompt": "p", "model": "veo3", "inputMode": "sideways"}, "inputMode", "Invalid inputMode"),
        ({"prompt": "p", "model": "veo3"}, "inputMode", "required"),
        ({"prompt": "p", "model": "sora-2-text-to-video", "inputMode": "image_to_video",
          "inputImageUrls": ["http://127.0.0.1:9/a.png"]}, "inputMode", "supports text_to_video only"),
        ({"prompt": "p", "model": "sora-2-image-to-video"}, "inputImageUrls", "at least one"),
        ({"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 5},
         "duration", "expected one of: 8"),
        ({"prompt": "p", "model": "kling/v2-1-master-text-to-video", "duration": "10"},
         "duration", "Expected integer"),
        ({"prompt": "p", "model": "gpt-image-2"}, "model", "image model"),
    ],
)  # fmt: skip
def test_video_field_errors(
    sim: Simulator, http: requests.Session, body: dict[str, Any], field: str, message_part: str
) -> None:
    details = assert_invalid(submit(http, sim, body, kind="video"))

    assert any(message_part in message for message in details["fieldErrors"][field]), details


@pytest.mark.parametrize(
    ("raw", "message_part"),
    [
        (b"{bad json", "Malformed JSON"),
        (b"", "empty"),
        (b"[1, 2]", "Expected object, received array"),
        (b'"prompt"', "Expected object, received string"),
        (b"null", "Expected object, received null"),
        (b"42", "Expected object, received number"),
        (b'{"prompt": NaN}', "NaN"),
        (b'{"prompt": "\xff\xfe caf\xe9"}', "not valid UTF-8"),
        (b"\xef\xbb\xbf{}", "Malformed JSON"),
        (b'{"prompt": 1' + b"9" * 5000 + b"}", "Malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting"),
        (b'{"prompt": "p", "providerInput": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nesting"),
    ],
)
def test_malformed_bodies_get_form_errors(
    sim: Simulator, http: requests.Session, raw: bytes, message_part: str
) -> None:
    details = assert_invalid(post_raw(http, sim, raw))

    assert any(message_part in message for message in details["formErrors"]), details


def test_lone_surrogate_in_prompt_is_a_field_error(sim: Simulator, http: requests.Session) -> None:
    details = assert_invalid(post_raw(http, sim, b'{"prompt": "bad \\ud800 text"}'))

    assert "invalid Unicode" in details["fieldErrors"]["prompt"][0]


def test_body_over_the_cap_is_rejected_and_the_connection_stays_usable(
    sim: Simulator, http: requests.Session
) -> None:
    huge = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    details = assert_invalid(post_raw(http, sim, huge))

    assert "larger than 1048576 bytes" in details["formErrors"][0]
    # the same keep-alive session still gets clean answers
    assert_invalid(post_raw(http, sim, b"{}"))


def test_chunked_bodies_are_read_and_capped(sim: Simulator, http: requests.Session) -> None:
    small = assert_invalid(post_raw(http, sim, iter([b'{"prompt":', b" 5}"])))
    big = assert_invalid(post_raw(http, sim, iter([b"x" * 65536] * 20)))

    assert small["fieldErrors"]["prompt"] == ["Expected string, received number"]
    assert "larger than" in big["formErrors"][0]


def test_unicode_prompts_are_accepted(sim: Simulator, http: requests.Session) -> None:
    response = submit(http, sim, {"prompt": "café ☕ 東京 🚀 \u0000 end"})

    assert response.status_code == 200
    sim.admin.reset()  # keep the autouse check ("nothing created") about the bad requests only


def test_garbage_request_line_gets_json_and_server_survives(sim: Simulator, http: requests.Session) -> None:
    with socket.create_connection((sim.host, sim.port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        reply = raw.recv(4096)

    assert reply.startswith(b"HTTP/")
    assert b"400" in reply.split(b"\r\n", 1)[0]
    assert_invalid(submit(http, sim, {}))


def test_wrong_method_and_unknown_path(sim: Simulator, http: requests.Session) -> None:
    wrong_method = http.get(sim.url + IMAGE_URL, headers=auth(), timeout=10)
    unknown = http.post(sim.url + "/api/ai/nothing", json={}, headers=auth(), timeout=10)

    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method not allowed"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not found"})


def test_big_body_to_an_unknown_path_gets_one_404_and_the_session_keeps_working(
    sim: Simulator, http: requests.Session
) -> None:
    response = http.post(sim.url + "/nowhere", data=b"x" * (2 * 1024 * 1024), headers=auth(), timeout=10)

    assert (response.status_code, response.json()) == (404, {"error": "Not found"})
    assert_invalid(submit(http, sim, {}))


@pytest.mark.parametrize(
    "request_bytes",
    [
        POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
        POST_HEAD + b"Content-Length: -1\r\n\r\n",
        POST_HEAD + b"Content-Length: 1_0\r\n\r\n0123456789",
    ],
    ids=["negative-chunk", "negative-length", "underscore-length"],
)
def test_bad_framing_is_a_400_not_a_hang(sim: Simulator, request_bytes: bytes) -> None:
    with socket.create_connection((sim.host, sim.port), timeout=5) as raw:
        raw.sendall(request_bytes)
        reply = b""
        while block := raw.recv(4096):  # the server closes the connection after a framing error
            reply += block

    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400")
    assert b'"Invalid request"' in rest
