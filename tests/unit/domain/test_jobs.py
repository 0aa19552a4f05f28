from __future__ import annotations

import json
from typing import Any

import pytest
from imagejobs.jobs import JobRequest, JobValidationError, parse_job, resolve_input_urls

from tests.unit.domain.test_urls import PUBLIC

BUCKET = "stack-bucket"


def parse(payload: Any, **kwargs: Any) -> JobRequest:
    kwargs.setdefault("input_bucket", BUCKET)
    kwargs.setdefault("resolver", PUBLIC)
    return parse_job(payload, "msg-0001", **kwargs)


def errors_of(payload: Any, **kwargs: Any) -> dict[str, list[str]]:
    with pytest.raises(JobValidationError) as excinfo:
        parse(payload, **kwargs)
    assert excinfo.value.field_errors, "a validation error must name at least one field"
    return excinfo.value.field_errors


def test_minimal_message_gets_defaults() -> None:
    job = parse('{"prompt": "a red fox"}')
    assert job.job_id == "msg-0001"
    assert job.model == "gpt-image-2"
    assert job.kind == "image"
    assert job.aspect_ratio is None
    assert job.to_provider_body() == {"prompt": "a red fox", "model": "gpt-image-2"}


def test_full_image_message_round_trips_through_the_record() -> None:
    message = {
        "jobId": "job_42-A",
        "prompt": "a red fox",
        "model": "nano-banana-2",
        "aspectRatio": "16:9",
        "inputImageUrls": ["https://cdn.example.com/ref.png", f"s3://{BUCKET}/inputs/ref.jpg"],
        "providerInput": {"resolution": "2K", "nested": {"a": [1, 2]}},
        "outputPrefix": "team-a/renders",
        "metadata": {"team": "a", "ticket": "T-1"},
    }
    job = parse(json.dumps(message).encode())
    assert job.job_id == "job_42-A"
    assert job.output_prefix == "team-a/renders/"
    assert job.metadata == {"team": "a", "ticket": "T-1"}
    assert f"s3://{BUCKET}/inputs/ref.jpg" in job.input_image_urls
    assert JobRequest.from_record(job.to_record()) == job


def test_provider_body_is_deterministic_and_resolves_s3_inputs() -> None:
    job = parse(
        {"prompt": "p", "inputImageUrls": [f"s3://{BUCKET}/in/a.png", "https://cdn.example.com/b.png"]}
    )
    calls: list[tuple[str, str]] = []

    def presign(bucket: str, key: str) -> str:
        calls.append((bucket, key))
        return f"https://{bucket}.s3.amazonaws.com/{key}?X-Amz-Signature=sig"

    body = job.to_provider_body(resolve_input_urls(job, presign))
    assert calls == [(BUCKET, "in/a.png")]
    assert body["inputImageUrls"] == [
        f"https://{BUCKET}.s3.amazonaws.com/in/a.png?X-Amz-Signature=sig",
        "https://cdn.example.com/b.png",
    ]
    assert list(body) == ["prompt", "model", "inputImageUrls"]
    assert json.dumps(job.to_provider_body()) == json.dumps(job.to_provider_body())


def test_video_message_is_recognised_from_the_catalog() -> None:
    job = parse({"prompt": "waves", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 8})
    assert job.kind == "video"
    assert job.to_provider_body()["inputMode"] == "text_to_video"


def test_unknown_model_passes_with_generic_checks() -> None:
    job = parse({"prompt": "p", "model": "future-model-9"})
    assert (job.kind, job.model) == ("image", "future-model-9")


@pytest.mark.parametrize(
    ("payload", "field", "reason_part"),
    [
        ("not json", "body", "not valid JSON"),
        (b"\xff\xfe", "body", "UTF-8"),
        ("[1, 2]", "body", "JSON object"),
        ('"text"', "body", "JSON object"),
        ("null", "body", "JSON object"),
        ("x" * (256 * 1024 + 1), "body", "limit"),
        ("[" * 5000 + "]" * 5000, "body", "nested"),
        ({"prompt": "p", "extra": 1}, "extra", "unknown field"),
        ({"prompt": "p", "jobID": "x"}, "jobID", "unknown field"),
        ({}, "prompt", "required"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   \n"}, "prompt", "empty"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": None}, "prompt", "required"),
        ({"prompt": "x" * 20_001}, "prompt", "20000"),
        ({"prompt": "x" * 5001, "model": "google/nano-banana"}, "prompt", "5000"),
        ({"prompt": "p", "jobId": ""}, "jobId", "match"),
        ({"prompt": "p", "jobId": "a/b"}, "jobId", "match"),
        ({"prompt": "p", "jobId": "x" * 81}, "jobId", "match"),
        ({"prompt": "p", "jobId": 12}, "jobId", "match"),
        ({"prompt": "p", "model": ""}, "model", "model name"),
        ({"prompt": "p", "model": 3}, "model", "model name"),
        ({"prompt": "p", "model": "bad model!"}, "model", "model name"),
        ({"prompt": "p", "aspectRatio": "7:3"}, "aspectRatio", "must be one of"),
        ({"prompt": "p", "aspectRatio": 1}, "aspectRatio", "string"),
        ({"prompt": "p", "aspectRatio": ""}, "aspectRatio", "string"),
        ({"prompt": "p", "inputImageUrls": "https://cdn.example.com/a.png"}, "inputImageUrls", "array"),
        ({"prompt": "p", "inputImageUrls": [1]}, "inputImageUrls", "item 0 must be a string"),
        ({"prompt": "p", "inputImageUrls": ["http://cdn.example.com/a"]}, "inputImageUrls", "https"),
        ({"prompt": "p", "inputImageUrls": ["https://127.0.0.1/a"]}, "inputImageUrls", "loopback"),
        ({"prompt": "p", "inputImageUrls": ["https://169.254.169.254/"]}, "inputImageUrls", "metadata"),
        ({"prompt": "p", "inputImageUrls": ["https://2130706433/"]}, "inputImageUrls", "loopback"),
        ({"prompt": "p", "inputImageUrls": ["s3://other-bucket/a.png"]}, "inputImageUrls", "stack's bucket"),
        ({"prompt": "p", "inputImageUrls": [f"s3://{BUCKET}/"]}, "inputImageUrls", "s3://<bucket>/<key>"),
        ({"prompt": "p", "inputImageUrls": [f"s3://{BUCKET}/../x"]}, "inputImageUrls", "object key"),
        ({"prompt": "p", "inputImageUrls": ["https://cdn.example.com/a"] * 5}, "inputImageUrls", "at most 4"),
        (
            {"prompt": "p", "inputImageUrls": ["https://cdn.example.com/" + "a" * 5000]},
            "inputImageUrls",
            "longer",
        ),
        ({"prompt": "p", "inputMode": "text_to_video"}, "inputMode", "video"),
        ({"prompt": "p", "duration": 5, "model": "gpt-image-2"}, "duration", "video"),
        ({"prompt": "p", "model": "veo3_fast", "inputMode": "sideways"}, "inputMode", "must be"),
        ({"prompt": "p", "model": "veo3_fast"}, "inputMode", "required"),
        (
            {"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 7},
            "duration",
            "one of",
        ),
        (
            {"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": "8"},
            "duration",
            "number",
        ),
        (
            {"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": True},
            "duration",
            "number",
        ),
        (
            {"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": 8.5},
            "duration",
            "whole",
        ),
        (
            {"prompt": "p", "model": "veo3_fast", "inputMode": "text_to_video", "duration": -8},
            "duration",
            "positive",
        ),
        (
            {"prompt": "p", "model": "sora-2-image-to-video", "inputMode": "image_to_video"},
            "inputImageUrls",
            "required",
        ),
        ({"prompt": "p", "providerInput": []}, "providerInput", "object"),
        ({"prompt": "p", "providerInput": {"blob": "x" * 17_000}}, "providerInput", "limit"),
        ({"prompt": "p", "outputPrefix": "/abs"}, "outputPrefix", "relative"),
        ({"prompt": "p", "outputPrefix": "a/../b"}, "outputPrefix", ".."),
        ({"prompt": "p", "outputPrefix": "a//b"}, "outputPrefix", "//"),
        ({"prompt": "p", "outputPrefix": "a b"}, "outputPrefix", "may only contain"),
        ({"prompt": "p", "outputPrefix": "a?b"}, "outputPrefix", "may only contain"),
        ({"prompt": "p", "outputPrefix": ""}, "outputPrefix", "non-empty"),
        ({"prompt": "p", "outputPrefix": 7}, "outputPrefix", "non-empty"),
        ({"prompt": "p", "outputPrefix": "a" * 600}, "outputPrefix", "longer"),
        ({"prompt": "p", "metadata": "team=a"}, "metadata", "object"),
        ({"prompt": "p", "metadata": {"team": 1}}, "metadata", "must be a string"),
        ({"prompt": "p", "metadata": {"bad key": "v"}}, "metadata", "key"),
        ({"prompt": "p", "metadata": {"Team": "a", "team": "b"}}, "metadata", "unique"),
        ({"prompt": "p", "metadata": {"k": "v" * 2100}}, "metadata", "limit"),
    ],
)
def test_invalid_messages_name_the_field_and_reason(payload: Any, field: str, reason_part: str) -> None:
    errors = errors_of(payload)
    assert field in errors, errors
    assert any(reason_part in reason for reason in errors[field]), errors[field]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of({"prompt": "", "aspectRatio": "nope", "metadata": [], "color": "red"})
    assert set(errors) >= {"prompt", "metadata", "color"}


def test_default_job_id_must_also_be_valid() -> None:
    with pytest.raises(JobValidationError) as excinfo:
        parse_job({"prompt": "p"}, "not/valid", resolver=PUBLIC)
    assert "jobId" in excinfo.value.field_errors


def test_validation_error_keeps_a_valid_job_id_for_the_rejected_record() -> None:
    with pytest.raises(JobValidationError) as excinfo:
        parse({"jobId": "keep-me", "prompt": ""})
    assert excinfo.value.job_id == "keep-me"
    assert "prompt" in str(excinfo.value)


def test_allow_listed_host_is_accepted_for_inputs() -> None:
    job = parse(
        {"prompt": "p", "inputImageUrls": ["http://127.0.0.1:9000/in.png"]}, allow_hosts=["127.0.0.1:9000"]
    )
    assert job.input_image_urls == ("http://127.0.0.1:9000/in.png",)


def test_s3_inputs_are_refused_without_a_configured_bucket() -> None:
    errors = errors_of({"prompt": "p", "inputImageUrls": ["s3://b/k.png"]}, input_bucket=None)
    assert "inputImageUrls" in errors
