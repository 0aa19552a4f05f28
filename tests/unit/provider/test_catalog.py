from __future__ import annotations

import pytest
from imagejobs import catalog
from imagejobs.catalog import get_model, implied_input_mode, validate_generation_request

GPT_RATIOS = ("auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9")


def image_body(**overrides: object) -> dict[str, object]:
    return {"prompt": "a lighthouse at dusk", "model": "gpt-image-2", **overrides}


def video_body(**overrides: object) -> dict[str, object]:
    return {"prompt": "waves", "model": "sora-2-text-to-video", "inputMode": "text_to_video", **overrides}


# ---- the table


@pytest.mark.parametrize(
    ("name", "max_images", "prompt_cap"),
    [
        ("gpt-image-2", 4, 20_000),
        ("nano-banana-2", 14, 20_000),
        ("nano-banana-pro", 8, 10_000),
        ("google/nano-banana", 10, 5_000),
    ],
)
def test_image_models_match_the_provider_table(name: str, max_images: int, prompt_cap: int) -> None:
    spec = get_model(name)
    assert spec is not None
    assert spec.kind == "image"
    assert spec.max_input_images == max_images
    assert spec.prompt_max_chars == prompt_cap
    assert spec.aspect_ratios == GPT_RATIOS
    assert set(spec.modes) == {"text_to_image", "image_to_image"}


def test_video_families_follow_their_name_suffix() -> None:
    videos = [spec for spec in catalog.model_table().values() if spec.kind == "video"]
    assert {spec.name for spec in videos} == {
        "kling/v2-1-standard", "kling/v2-1-pro", "kling/v2-1-master-text-to-video",
        "sora-2-text-to-video", "sora-2-pro-text-to-video", "sora-2-image-to-video",
        "hailuo/02-text-to-video-standard", "hailuo/02-text-to-video-pro",
        "hailuo/02-image-to-video-standard", "hailuo/02-image-to-video-pro",
        "veo3_fast", "veo3", "veo3_lite", "wan/2-6-text-to-video", "wan/2-6-image-to-video",
        "bytedance/seedance-1.5-pro",
    }  # fmt: skip
    for spec in videos:
        if spec.name.endswith("-text-to-video") or "-text-to-video-" in spec.name:
            assert spec.input_modes == ("text_to_video",), spec.name
        if spec.name.endswith("-image-to-video") or "-image-to-video-" in spec.name:
            assert spec.input_modes == ("image_to_video",), spec.name
            assert implied_input_mode(spec) == "image_to_video"  # so inputImageUrls is required
    for veo in ("veo3", "veo3_fast", "veo3_lite"):
        spec = get_model(veo)
        assert spec is not None
        assert spec.durations == (8,)
        assert set(spec.input_modes) == {"text_to_video", "image_to_video"}
    kling_pro = get_model("kling/v2-1-pro")
    assert implied_input_mode(kling_pro) == "image_to_video"
    assert get_model("wan/2-6-text-to-video").durations == (5, 10, 15, 20)  # type: ignore[union-attr]


def test_unknown_model_is_none() -> None:
    assert get_model("no-such-model") is None


def test_table_is_loaded_once() -> None:
    assert catalog.model_table() is catalog.model_table()


# ---- image requests


def test_valid_minimal_image_request() -> None:
    assert validate_generation_request(image_body(), "image") == {}


def test_valid_full_image_request() -> None:
    body = image_body(aspectRatio="4:5", inputImageUrls=["https://a/1.jpg"] * 4, providerInput={"seed": 7})
    assert validate_generation_request(body, "image") == {}


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (None, "is required"),
        (42, "must be a string (got number)"),
        ("   \n", "must not be blank"),
        ("x" * 20_001, "must be at most 20000 characters (got 20001)"),
    ],
)
def test_prompt_rules(prompt: object, message: str) -> None:
    body = image_body()
    if prompt is None:
        del body["prompt"]
    else:
        body["prompt"] = prompt
    assert validate_generation_request(body, "image") == {"prompt": [message]}


def test_prompt_at_the_cap_is_valid_and_counts_utf16_units() -> None:
    assert validate_generation_request(image_body(prompt="x" * 20_000), "image") == {}
    # 9,999 emoji = 19,998 UTF-16 units (fine); 10,001 = 20,002 (over), as the provider counts.
    assert validate_generation_request(image_body(prompt="🙂" * 9_999), "image") == {}
    errors = validate_generation_request(image_body(prompt="🙂" * 10_001), "image")
    assert errors == {"prompt": ["must be at most 20000 characters (got 20002)"]}


def test_prompt_cap_is_per_model() -> None:
    body = image_body(model="google/nano-banana", prompt="y" * 5_001)
    assert validate_generation_request(body, "image") == {
        "prompt": ["must be at most 5000 characters (got 5001)"]
    }


def test_aspect_ratio_must_be_in_the_model_list() -> None:
    errors = validate_generation_request(image_body(aspectRatio="7:3"), "image")
    assert list(errors) == ["aspectRatio"]
    assert "got '7:3'" in errors["aspectRatio"][0]
    assert "21:9" in errors["aspectRatio"][0]
    assert validate_generation_request(image_body(aspectRatio=""), "image") == {
        "aspectRatio": ["must be a non-empty string (got string)"]
    }


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("https://a/1.jpg", "must be an array of strings (got string)"),
        ({"u": 1}, "must be an array of strings (got object)"),
        ([], "must not be empty (omit it for text-only generation)"),
        (["https://a/1.jpg", 5], "item 1 must be a non-empty string (got number)"),
        (["https://a/1.jpg"] * 5, "must have at most 4 items for 'gpt-image-2' (got 5)"),
    ],
)
def test_input_image_rules(urls: object, message: str) -> None:
    assert validate_generation_request(image_body(inputImageUrls=urls), "image") == {
        "inputImageUrls": [message]
    }


def test_max_images_is_per_model() -> None:
    body = image_body(model="nano-banana-2", inputImageUrls=["https://a/x.png"] * 14)
    assert validate_generation_request(body, "image") == {}
    body["inputImageUrls"] = ["https://a/x.png"] * 15
    assert "got 15" in validate_generation_request(body, "image")["inputImageUrls"][0]


def test_provider_input_must_be_an_object() -> None:
    errors = validate_generation_request(image_body(providerInput=[1, 2]), "image")
    assert errors == {"providerInput": ["must be an object (got array)"]}


def test_video_only_fields_are_rejected_for_images() -> None:
    errors = validate_generation_request(image_body(inputMode="text_to_video", duration=5), "image")
    assert errors == {
        "inputMode": ["only applies to video models"],
        "duration": ["only applies to video models"],
    }


def test_model_is_required_and_kind_must_match() -> None:
    assert validate_generation_request({"prompt": "p"}, "image") == {"model": ["is required"]}
    assert validate_generation_request(image_body(model=" "), "image") == {
        "model": ["must be a non-empty string (got string)"]
    }
    errors = validate_generation_request(video_body(model="gpt-image-2"), "video")
    assert errors == {"model": ["'gpt-image-2' is for image generation, not video"]}


def test_unknown_model_gets_generic_checks_only() -> None:
    body = {
        "prompt": "z" * 50_000,
        "model": "brand-new-model",
        "aspectRatio": "13:7",
        "inputImageUrls": ["u"] * 30,
    }
    assert validate_generation_request(body, "image") == {}
    body["prompt"] = " "
    body["inputImageUrls"] = ["u", None]
    assert validate_generation_request(body, "image") == {
        "prompt": ["must not be blank"],
        "inputImageUrls": ["item 1 must be a non-empty string (got null)"],
    }


def test_several_errors_are_reported_together() -> None:
    body = {"prompt": "", "model": "gpt-image-2", "aspectRatio": "2:1", "providerInput": "x"}
    assert set(validate_generation_request(body, "image")) == {"prompt", "aspectRatio", "providerInput"}


def test_body_must_be_a_mapping_and_kind_known() -> None:
    assert validate_generation_request([], "image") == {"body": ["must be a JSON object (got array)"]}  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        validate_generation_request(image_body(), "audio")  # type: ignore[arg-type]


# ---- video requests


def test_valid_video_requests() -> None:
    assert validate_generation_request(video_body(duration=10), "video") == {}
    i2v = video_body(model="kling/v2-1-pro", inputMode="image_to_video", inputImageUrls=["https://a/1.png"])
    assert validate_generation_request(i2v, "video") == {}
    veo = video_body(model="veo3_fast", duration=8)
    assert validate_generation_request(veo, "video") == {}


def test_input_mode_required_only_where_the_model_has_both_modes() -> None:
    single = video_body()
    del single["inputMode"]
    assert validate_generation_request(single, "video") == {}  # implied: text_to_video
    veo = video_body(model="veo3", duration=8)
    del veo["inputMode"]
    assert validate_generation_request(veo, "video") == {
        "inputMode": ["is required for 'veo3' (one of text_to_video, image_to_video)"]
    }
    errors = validate_generation_request(video_body(inputMode="image_to_video"), "video")
    assert errors["inputMode"] == ["must be text_to_video for 'sora-2-text-to-video' (got 'image_to_video')"]
    assert validate_generation_request(video_body(inputMode=3), "video") == {
        "inputMode": ["must be a non-empty string (got number)"]
    }


def test_text_to_video_takes_no_images_even_on_dual_mode_models() -> None:
    body = video_body(model="veo3", inputMode="text_to_video", inputImageUrls=["https://a/1.png"])
    assert validate_generation_request(body, "video") == {
        "inputImageUrls": ["is not used with inputMode text_to_video (omit it, or use image_to_video)"]
    }


def test_image_to_video_takes_one_image() -> None:
    body = video_body(model="kling/v2-1-pro", inputMode="image_to_video", inputImageUrls=["https://a"] * 2)
    assert validate_generation_request(body, "video") == {
        "inputImageUrls": ["must have at most 1 item for 'kling/v2-1-pro' (got 2)"]
    }


def test_image_to_video_needs_an_image() -> None:
    body = video_body(model="sora-2-image-to-video")
    del body["inputMode"]  # implied by the model
    assert validate_generation_request(body, "video") == {
        "inputImageUrls": ["is required (at least one image) for image_to_video"]
    }
    veo = video_body(model="veo3", inputMode="image_to_video")
    assert "inputImageUrls" in validate_generation_request(veo, "video")


def test_text_only_video_model_takes_no_images() -> None:
    errors = validate_generation_request(video_body(inputImageUrls=["https://a/1.png"]), "video")
    assert errors == {"inputImageUrls": ["is not accepted by 'sora-2-text-to-video' (a text-only model)"]}


@pytest.mark.parametrize(
    ("model", "duration", "message"),
    [
        ("veo3", 10, "must be one of 8 seconds for 'veo3' (got 10)"),
        (
            "sora-2-text-to-video",
            7,
            "must be one of 5, 10, 15, 20 seconds for 'sora-2-text-to-video' (got 7)",
        ),
        ("sora-2-text-to-video", True, "must be a positive whole number of seconds (got True)"),
        ("sora-2-text-to-video", "10", "must be a positive whole number of seconds (got '10')"),
        ("sora-2-text-to-video", 0, "must be a positive whole number of seconds (got 0)"),
        ("sora-2-text-to-video", 5.5, "must be a positive whole number of seconds (got 5.5)"),
    ],
)
def test_duration_rules(model: str, duration: object, message: str) -> None:
    inp = "text_to_video"
    assert validate_generation_request(
        video_body(model=model, inputMode=inp, duration=duration), "video"
    ) == {"duration": [message]}


def test_unknown_video_model_generic_checks() -> None:
    body = {"prompt": "p", "model": "future-video", "inputMode": "some_new_mode", "duration": 37}
    assert validate_generation_request(body, "video") == {}
    body["duration"] = -1
    assert list(validate_generation_request(body, "video")) == ["duration"]
