"""Image uploads under the inputs prefix become image-to-image jobs (or REJECTED records with the reason)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from imagejobs.config import IntakeSettings
from imagejobs.intake import handle_job_message
from imagejobs.jobs import parse_job
from imagejobs.uploads import UploadContext, handle_upload_message, parse_upload_message

from tests.conftest import SAMPLE_ENV
from tests.unit.domain.fakes import FakeProvider
from tests.unit.uploads.conftest import BUCKET, Aws, png_bytes, s3_event


def deliver(aws: Aws, body: str) -> list[Any]:
    return handle_upload_message(body, UploadContext(aws.s3, aws.sqs, aws.store, aws.settings, aws.clock))


class FakeSfn:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        self.started.append(name)
        return {"executionArn": f"{stateMachineArn}:{name}"}


def test_photo_with_metadata_prompt_becomes_a_job_whose_provider_request_carries_a_presigned_url(
    aws: Aws,
) -> None:
    key = "inputs/bottle.png"
    etag = aws.put(key, png_bytes(), Metadata={"prompt": "same bottle, ivory paper", "aspect-ratio": "4:5"})
    [outcome] = deliver(aws, s3_event(key, etag=etag))
    assert outcome.ack and outcome.reason == "enqueued" and outcome.job_id.startswith("up-")
    [message] = aws.messages()
    assert message == {
        "jobId": outcome.job_id,
        "prompt": "same bottle, ivory paper",
        "aspectRatio": "4:5",
        "inputImageUrls": [f"s3://{BUCKET}/{key}"],
    }
    # The one intake path turns it into a provider request with a presigned GET URL of the photo.
    provider = FakeProvider()
    result = handle_job_message(
        json.dumps(message), "msg-1", store=aws.store, provider=provider, sfn=FakeSfn(), s3=aws.s3,
        settings=IntakeSettings.from_env(SAMPLE_ENV), now=aws.clock,
    )  # fmt: skip
    assert result.ack and result.status == "SUBMITTED"
    [(kind, body)] = provider.submissions
    [url] = body["inputImageUrls"]
    assert kind == "image" and key in url and "Signature" in url and "Expires=" in url
    assert body["prompt"] == "same bottle, ivory paper" and body["aspectRatio"] == "4:5"


def test_a_photos_webhook_url_metadata_is_its_jobs_webhook(aws: Aws) -> None:
    key = "inputs/hooked.png"
    metadata = {"prompt": "p", "webhook-url": "https://93.184.216.34/hook"}
    deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata=metadata)))
    [message] = aws.messages()
    assert message["webhookUrl"] == "https://93.184.216.34/hook" and "metadata" not in message


def test_the_same_event_delivered_twice_makes_the_same_job_id(aws: Aws) -> None:
    key = "inputs/twice.jpg"
    etag = aws.put(key, b"\xff\xd8\xff\xe0" + b"\x00" * 100, Metadata={"prompt": "twice"})
    first = deliver(aws, s3_event(key, etag=etag))[0].job_id
    second = deliver(aws, s3_event(key, etag=etag))[0].job_id
    assert first == second
    assert {m["jobId"] for m in aws.messages()} == {first}  # the intake acks the second copy unprocessed


def test_a_new_prompt_on_the_same_photo_is_a_new_job(aws: Aws) -> None:
    key = "inputs/again.png"
    first = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"prompt": "one"})))[0]
    second = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"prompt": "two"})))[0]
    assert first.job_id != second.job_id


@pytest.mark.parametrize("encoding", ["aws", "moto"])
def test_keys_with_spaces_and_unicode_are_decoded(aws: Aws, encoding: str) -> None:
    key = "inputs/Café shots/bouteille n°1 (final).png"
    etag = aws.put(key, png_bytes(), Metadata={"prompt": "unicode key"})
    event = s3_event(key, etag=etag, encode=encoding)
    assert "%2F" in event if encoding == "moto" else "%2F" not in event
    [outcome] = deliver(aws, event)
    assert outcome.reason == "enqueued", outcome
    [message] = aws.messages()
    assert message["inputImageUrls"] == [f"s3://{BUCKET}/{key}"]
    parse_job(message, "x", settings=aws.settings)


def test_rfc2047_encoded_unicode_metadata_prompt_is_decoded(aws: Aws) -> None:
    prompt = "Flasche auf Papier, weiches Licht — ☀"
    encoded = "=?UTF-8?B?" + base64.b64encode(prompt.encode()).decode() + "?="
    key = "inputs/unicode-prompt.png"
    deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"prompt": encoded})))
    [message] = aws.messages()
    assert message["prompt"] == prompt


@pytest.mark.parametrize(
    ("body", "metadata", "field", "fragment"),
    [
        (b"%PDF-1.7 not an image", {"prompt": "p"}, "upload", "not an image"),
        (b"", {"prompt": "p"}, "upload", "empty"),
        (png_bytes(), {}, "prompt", "x-amz-meta-prompt"),
        (png_bytes(), {"prompt": "p", "aspect-ratio": "7:3"}, "aspectRatio", ""),
        (png_bytes(), {"prompt": "p", "output-prefix": "inputs/loop/"}, "outputPrefix", "new jobs"),
    ],
    ids=["not-image", "empty", "no-prompt", "bad-ratio", "output-into-inputs"],
)
def test_unusable_uploads_are_recorded_rejected_with_the_reason(
    aws: Aws, body: bytes, metadata: dict[str, str], field: str, fragment: str
) -> None:
    key = "inputs/unusable.bin"
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, body, Metadata=metadata)))
    assert outcome.ack and outcome.reason.startswith("rejected")
    record = aws.store.get(outcome.job_id)
    assert record is not None and record["status"] == "REJECTED"
    assert record["error"]["source"] == "validation"
    assert field in record["error"]["fieldErrors"]
    assert fragment in " ".join(record["error"]["fieldErrors"][field])
    assert f"s3://{BUCKET}/{key}" in record["error"]["message"]
    # Named on the record, so `imagejobs list` can show which upload it was.
    assert record["upload"] == {"bucket": BUCKET, "key": key, "uri": f"s3://{BUCKET}/{key}"}
    assert aws.messages() == []


def test_too_large_uploads_are_rejected(aws: Aws) -> None:
    aws.settings = replace(aws.settings, max_upload_bytes=100)
    key = "inputs/big.png"
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes((64, 64)), Metadata={"prompt": "p"})))
    record = aws.store.get(outcome.job_id)
    assert record is not None and "the limit is 100" in record["error"]["fieldErrors"]["upload"][0]


def test_sidecar_uploaded_first_gives_the_options(aws: Aws) -> None:
    key = "inputs/side.png"
    sidecar = {"prompt": "from the sidecar", "aspectRatio": "16:9", "metadata": {"team": "a"}}
    [waiting] = deliver(
        aws, s3_event(key + ".json", etag=aws.put(key + ".json", json.dumps(sidecar).encode()))
    )
    assert waiting.kind == "sidecar" and waiting.reason.startswith("waiting")
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes())))
    [message] = aws.messages()
    assert message["prompt"] == "from the sidecar" and message["aspectRatio"] == "16:9"
    assert message["metadata"] == {"team": "a"} and message["jobId"] == outcome.job_id


def test_sidecar_after_a_promptless_image_starts_the_job(aws: Aws) -> None:
    key = "inputs/late.png"
    [rejected] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes())))
    assert aws.store.get(rejected.job_id)["status"] == "REJECTED"  # type: ignore[index]
    sidecar_etag = aws.put(key + ".json", json.dumps({"prompt": "late sidecar"}).encode())
    [outcome] = deliver(aws, s3_event(key + ".json", etag=sidecar_etag))
    assert outcome.reason == "enqueued" and outcome.job_id != rejected.job_id
    [message] = aws.messages()
    assert message["prompt"] == "late sidecar"


def test_invalid_sidecar_is_rejected_naming_it(aws: Aws) -> None:
    key = "inputs/badside.png"
    aws.put(key + ".json", b"{not json")
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"prompt": "p"})))
    record = aws.store.get(outcome.job_id)
    assert (
        record is not None
        and "badside.png.json is not UTF-8 JSON" in record["error"]["fieldErrors"]["sidecar"][0]
    )


def test_recipe_chosen_by_sub_prefix_fills_its_prompt_template(aws: Aws) -> None:
    recipe = {"prompt": "Studio shot of ${product} (${stem}) on ivory paper", "model": "gpt-image-2",
              "aspectRatio": "4:5"}  # fmt: skip
    aws.put("recipes/product-shot.json", json.dumps(recipe).encode())
    key = "inputs/product-shot/serum.png"
    deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"product": "a serum bottle"})))
    [message] = aws.messages()
    assert message["prompt"] == "Studio shot of a serum bottle (serum) on ivory paper"
    assert message["model"] == "gpt-image-2" and message["aspectRatio"] == "4:5"
    assert message["metadata"] == {"product": "a serum bottle"}
    # Object metadata beats the recipe.
    key2 = "inputs/product-shot/wide.png"
    meta = {"product": "a jar", "aspect-ratio": "16:9"}
    deliver(aws, s3_event(key2, etag=aws.put(key2, png_bytes(), Metadata=meta)))
    [message2] = aws.messages()
    assert message2["aspectRatio"] == "16:9"


def test_recipe_missing_a_template_variable_is_rejected(aws: Aws) -> None:
    aws.put("recipes/needs-product.json", json.dumps({"prompt": "shot of ${product}"}).encode())
    key = "inputs/needs-product/x.png"
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes())))
    record = aws.store.get(outcome.job_id)
    assert record is not None
    assert "x-amz-meta-product" in record["error"]["fieldErrors"]["recipe"][0]


def test_sub_prefix_without_a_recipe_is_only_a_folder(aws: Aws) -> None:
    key = "inputs/team-a/folder-only.png"
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, png_bytes(), Metadata={"prompt": "p"})))
    assert outcome.reason == "enqueued"


def test_objects_written_by_the_pipeline_never_become_jobs(aws: Aws) -> None:
    key = "inputs/output-copy.png"
    etag = aws.put(key, png_bytes(), Metadata={"job-id": "abc", "prompt": "p"})
    [outcome] = deliver(aws, s3_event(key, etag=etag))
    assert outcome.kind == "ignored" and "recursion" in outcome.reason
    assert aws.messages() == [] and aws.store.get(outcome.job_id or "none") is None


@pytest.mark.parametrize(
    "key", ["outputs/j1/0.png", "batches/x.jsonl.report.json", "recipes/r.json", "inputs/folder/"]
)
def test_keys_outside_the_triggers_are_ignored(aws: Aws, key: str) -> None:
    etag = aws.put(key, png_bytes(), Metadata={"prompt": "p"})
    [outcome] = deliver(aws, s3_event(key, etag=etag))
    assert outcome.kind == "ignored" and aws.messages() == []


def test_s3_test_event_is_acknowledged_without_work(aws: Aws) -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    assert parse_upload_message(body) == []
    assert deliver(aws, body) == []


def test_superseded_upload_is_left_to_the_newer_event(aws: Aws) -> None:
    key = "inputs/replaced.png"
    old = aws.put(key, png_bytes((4, 4)), Metadata={"prompt": "old"})
    aws.put(key, png_bytes((5, 5)), Metadata={"prompt": "new"})
    [outcome] = deliver(aws, s3_event(key, etag=old))
    assert outcome.kind == "ignored" and "superseded" in outcome.reason
    assert aws.messages() == []


@pytest.mark.parametrize("key", ["batches/catalog.json", "batches/notes.txt"])
def test_a_batches_file_that_is_not_jsonl_gets_a_rejected_record_naming_the_key(aws: Aws, key: str) -> None:
    etag = aws.put(key, b'{"prompt": "p"}\n')
    [outcome] = deliver(aws, s3_event(key, etag=etag))
    assert outcome.kind == "unsupported" and aws.messages() == []
    record = aws.store.get(outcome.job_id or "none")
    assert record is not None and record["status"] == "REJECTED"
    assert record["error"]["fieldErrors"] == {
        "key": [f"{key} is not a .jsonl file (batches are JSON Lines files named *.jsonl)"]
    }
    # The same event again (S3 delivers at least once): the same record, not a second one.
    [again] = deliver(aws, s3_event(key, etag=etag))
    assert again.job_id == outcome.job_id


def test_an_upper_case_jsonl_suffix_is_a_batch(aws: Aws) -> None:
    key = "batches/CATALOG.JSONL"
    [outcome] = deliver(aws, s3_event(key, etag=aws.put(key, b'{"prompt": "p"}\n')))
    assert outcome.kind == "batch"
    assert [m["prompt"] for m in aws.messages()] == ["p"]
