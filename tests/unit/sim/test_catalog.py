"""Model table and submission validation (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from imagejobs_tools.sim.catalog import (
    IMAGE_SIZES,
    MAX_JSON_DEPTH,
    MODELS,
    BodyError,
    json_depth,
    parse_json_body,
    validate_submission,
)


@pytest.mark.parametrize(
    ("body", "credits"),
    [
        ({"prompt": "p"}, 3),
        ({"prompt": "p", "model": "gpt-image-2"}, 3),
        ({"prompt": "p", "model": "nano-banana-2"}, 4),
        ({"prompt": "p", "model": "nano-banana-2", "resolution": "2K"}, 6),
        ({"prompt": "p", "model": "nano-banana-2", "providerInput": {"resolution": "4K"}}, 8),
        ({"prompt": "p", "model": "nano-banana-pro"}, 12),
        ({"prompt": "p", "model": "nano-banana-pro", "resolution": "4K"}, 20),
        ({"prompt": "p", "model": "google/nano-banana"}, 3),
    ],
)
def test_image_credits_follow_the_documented_table(body: dict[str, Any], credits: int) -> None:
    request, errors = validate_submission("image", body)

    assert not errors
    assert request is not None
    assert request.credits == credits


def test_video_defaults_mode_and_duration_for_single_mode_models() -> None:
    request, errors = validate_submission(
        "video", {"prompt": "p", "model": "kling/v2-1-master-text-to-video"}
    )

    assert not errors and request is not None
    assert (request.input_mode, request.duration, request.credits) == ("text_to_video", 5, 160)


def test_image_to_video_takes_the_reference_image() -> None:
    body = {
        "prompt": "p",
        "model": "veo3",
        "inputMode": "image_to_video",
        "inputImageUrls": ["https://x/a.png"],
    }

    request, errors = validate_submission("video", body)

    assert not errors and request is not None
    assert request.input_image_urls == ("https://x/a.png",)
    assert request.duration == 8


def test_every_problem_is_reported_at_once() -> None:
    body = {"prompt": 1, "aspectRatio": "2:1", "inputImageUrls": ["nope"] * 5, "providerInput": "x"}

    request, errors = validate_submission("image", body)

    assert request is None
    assert set(errors.field_errors) == {"prompt", "aspectRatio", "inputImageUrls", "providerInput"}
    assert len(errors.field_errors["inputImageUrls"]) == 6  # five bad items + the count


def test_booleans_are_not_numbers() -> None:
    body = {"prompt": "p", "model": "veo3_lite", "inputMode": "text_to_video", "duration": True}
    request, errors = validate_submission("video", body)

    assert request is None
    assert errors.field_errors["duration"] == ["Expected integer, received boolean"]


def test_every_image_ratio_has_an_exact_size() -> None:
    for ratio, (width, height) in IMAGE_SIZES.items():
        if ratio != "auto":
            across, down = (int(n) for n in ratio.split(":"))
            assert width * down == height * across, ratio
    assert set(MODELS["gpt-image-2"].aspect_ratios) == set(IMAGE_SIZES)


def test_every_documented_video_family_is_present() -> None:
    videos = {name for name, spec in MODELS.items() if spec.kind == "video"}

    assert {"kling/v2-1-standard", "sora-2-pro-text-to-video", "hailuo/02-image-to-video-pro", "veo3_fast",
            "wan/2-6-image-to-video", "bytedance/seedance-1.5-pro"} <= videos  # fmt: skip
    for name in videos:
        spec = MODELS[name]
        assert spec.durations and spec.credits_per_second > 0
        if name.endswith("-text-to-video"):
            assert spec.input_modes == ("text_to_video",)
        if name.endswith("-image-to-video"):
            assert spec.input_modes == ("image_to_video",)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{", "Malformed JSON"),
        (b'{"a": Infinity}', "Infinity"),
        (b"\xc3\x28", "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nesting"),
    ],
)
def test_parse_json_body_rejects_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        parse_json_body(raw)


def test_parse_json_body_accepts_depth_up_to_the_limit() -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH

    assert json_depth(parse_json_body(nested)) == MAX_JSON_DEPTH
    with pytest.raises(BodyError):
        parse_json_body(b"[" + nested + b"]")
