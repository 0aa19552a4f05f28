from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from imagejobs.copier import OutputCopier, OutputCopyError
from imagejobs.provider import (
    OutcomeUnknown,
    ProviderServerError,
    ProviderUnauthorized,
    ProviderUnreachable,
    RateLimited,
    TaskNotFound,
    TaskStatus,
)
from imagejobs.store import JobStore, iso
from imagejobs.workflow import (
    ProviderTransientError,
    finalize_step,
    poll_step,
    refunded_credits,
    store_outputs_step,
)
from moto import mock_aws

from tests.unit.domain.fakes import FakeProvider, create_jobs_table, snapshot
from tests.unit.domain.test_copier import PNG, FakeHttp
from tests.unit.domain.test_urls import PUBLIC

T0 = 1_767_225_600.0
BUCKET = "outputs"
STATE = {
    "jobId": "job-1",
    "taskId": "tsk_1",
    "kind": "image",
    "pollIntervalSeconds": 2,
    "deadline": T0 + 600,
    "polls": 0,
}


@pytest.fixture
def aws() -> Iterator[tuple[JobStore, Any]]:
    with mock_aws():
        store = JobStore(create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1")))
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        request = {
            "jobId": "job-1",
            "kind": "image",
            "model": "gpt-image-2",
            "prompt": "p",
            "outputPrefix": "team/",
            "metadata": {"team": "a"},
        }
        store.create_received("job-1", request, now=T0)
        store.claim_for_submit("job-1", 60, now=T0)
        store.mark_submitted("job-1", "tsk_1", 3, "arn:exec", submit_ms=50, now=T0 + 1)
        yield store, s3


def copier_for(s3: Any, routes: dict[str, tuple[int, dict[str, str], Any]]) -> tuple[OutputCopier, FakeHttp]:
    session = requests.Session()
    adapter = FakeHttp(routes)
    session.mount("https://", adapter)
    return OutputCopier(session, s3, BUCKET, max_bytes=1024 * 1024, resolver=PUBLIC), adapter


@pytest.mark.parametrize(
    ("refunded", "used", "expected"), [(True, 3, 3), (False, 3, 0), (None, 3, 0), (2, 3, 2), (True, None, 0)]
)
def test_refunded_credits(refunded: Any, used: int | None, expected: int) -> None:
    assert refunded_credits(refunded, used) == expected


def test_poll_pending_increments_polls_and_keeps_state() -> None:
    provider = FakeProvider(snapshots=[snapshot()])
    out = poll_step(STATE, provider, now=lambda: T0 + 10)
    assert out == {
        **STATE,
        "polls": 1,
        "poll": {
            "status": "PENDING",
            "deadlineExceeded": False,
            "outputUrls": [],
            "errorCode": None,
            "errorMessage": None,
            "creditsUsed": 3,
            "creditsRefunded": 0,
        },
    }
    assert provider.polls == ["tsk_1"]
    assert json.dumps(out)  # Step Functions needs plain JSON


def test_poll_pending_past_deadline_is_flagged() -> None:
    out = poll_step({**STATE, "polls": 7}, FakeProvider(snapshots=[snapshot()]), now=lambda: T0 + 600)
    assert out["poll"]["deadlineExceeded"] is True and out["polls"] == 8


def test_poll_completed_past_deadline_is_not_a_timeout() -> None:
    done = snapshot(
        status=TaskStatus.COMPLETED,
        output_urls=("https://cdn.example.com/a.png",),
        completed_at="2026-01-01T00:00:30.000Z",
    )
    out = poll_step(STATE, FakeProvider(snapshots=[done]), now=lambda: T0 + 9999)
    assert out["poll"]["status"] == "COMPLETED" and out["poll"]["deadlineExceeded"] is False
    assert out["poll"]["outputUrls"] == ["https://cdn.example.com/a.png"]


def test_poll_failed_carries_code_message_and_refund() -> None:
    failed = snapshot(
        status=TaskStatus.FAILED,
        error_code="STORAGE_ERROR",
        error_message="could not persist",
        credits_refunded=True,
    )
    poll = poll_step(STATE, FakeProvider(snapshots=[failed]), now=lambda: T0)["poll"]
    assert (poll["status"], poll["errorCode"], poll["errorMessage"], poll["creditsRefunded"]) == (
        "FAILED",
        "STORAGE_ERROR",
        "could not persist",
        3,
    )


@pytest.mark.parametrize(
    "error",
    [
        RateLimited(1.0),
        ProviderServerError(502),
        ProviderUnreachable("refused"),
        OutcomeUnknown("read timeout", submission=False),
    ],
)
def test_transient_poll_errors_become_provider_transient_error(error: Exception) -> None:
    with pytest.raises(ProviderTransientError):
        poll_step(STATE, FakeProvider(task_error=error), now=lambda: T0)


@pytest.mark.parametrize("error", [TaskNotFound("tsk_1"), ProviderUnauthorized()])
def test_permanent_poll_errors_propagate_with_their_own_type(error: Exception) -> None:
    with pytest.raises(type(error)):
        poll_step(STATE, FakeProvider(task_error=error), now=lambda: T0)


def completed_state(urls: list[str]) -> dict[str, Any]:
    return {
        **STATE,
        "polls": 3,
        "poll": {
            "status": "COMPLETED",
            "deadlineExceeded": False,
            "outputUrls": urls,
            "errorCode": None,
            "errorMessage": None,
            "creditsUsed": 3,
            "creditsRefunded": 0,
        },
    }


def test_store_outputs_copies_and_completes_idempotently(aws: tuple[JobStore, Any]) -> None:
    store, s3 = aws
    copier, adapter = copier_for(s3, {"https://cdn.example.com/a.png": (200, {}, PNG)})
    state = completed_state(["https://cdn.example.com/a.png"])
    result = store_outputs_step(state, store, copier, default_prefix="outputs/", now=T0 + 31)
    assert result["status"] == "COMPLETED"
    record = store.get("job-1")
    assert record is not None
    assert record["status"] == "COMPLETED" and record["polls"] == 3 and record["creditsUsed"] == 3
    [output] = record["outputs"]
    assert output["key"] == "team/job-1/0.png" and output["contentType"] == "image/png"
    assert record["latency"] == {"submitMs": 50, "generationSeconds": 30.0, "totalSeconds": 31.0}
    assert s3.head_object(Bucket=BUCKET, Key="team/job-1/0.png")["Metadata"]["team"] == "a"
    again = store_outputs_step(state, store, copier, default_prefix="outputs/", now=T0 + 40)
    assert again["status"] == "COMPLETED"
    assert len(adapter.requests) == 1  # the repeat did not download again
    assert store.get("job-1")["updatedAt"] == iso(T0 + 31)  # type: ignore[index]


def test_store_outputs_with_no_urls_records_empty_result(aws: tuple[JobStore, Any]) -> None:
    store, s3 = aws
    copier, _ = copier_for(s3, {})
    result = store_outputs_step(completed_state([]), store, copier, default_prefix="outputs/", now=T0 + 5)
    assert result["status"] == "FAILED"
    assert store.get("job-1")["error"]["code"] == "EMPTY_RESULT"  # type: ignore[index]


def test_store_outputs_transient_fetch_error_is_retryable(aws: tuple[JobStore, Any]) -> None:
    store, s3 = aws
    copier, _ = copier_for(s3, {"https://cdn.example.com/a.png": (503, {}, b"")})
    with pytest.raises(ProviderTransientError):
        store_outputs_step(
            completed_state(["https://cdn.example.com/a.png"]), store, copier, default_prefix="o/"
        )
    assert store.get("job-1")["status"] == "SUBMITTED"  # type: ignore[index]


def test_store_outputs_permanent_error_goes_to_catch(aws: tuple[JobStore, Any]) -> None:
    store, s3 = aws
    copier, _ = copier_for(s3, {"https://cdn.example.com/a.png": (200, {}, b"<html>not an image")})
    with pytest.raises(OutputCopyError):
        store_outputs_step(
            completed_state(["https://cdn.example.com/a.png"]), store, copier, default_prefix="o/"
        )


def _tags(s3: Any, key: str) -> list[dict[str, str]]:
    return list(s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"])


TWO_URLS = ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"]


def test_a_failed_attempt_tags_what_it_wrote_for_expiry(aws: tuple[JobStore, Any]) -> None:
    store, s3 = aws
    routes = {TWO_URLS[0]: (200, {}, PNG), TWO_URLS[1]: (503, {}, b"")}
    copier, _ = copier_for(s3, routes)
    with pytest.raises(ProviderTransientError):
        store_outputs_step(completed_state(TWO_URLS), store, copier, default_prefix="o/")
    assert _tags(s3, "team/job-1/0.png") == [{"Key": "imagejobs-orphan", "Value": "true"}]


def test_a_failed_duplicate_attempt_leaves_the_finished_jobs_outputs_alone(aws: tuple[JobStore, Any]) -> None:
    # Two loops store the same job (a duplicate EXPRESS loop): keys are per job, so the failing one
    # has overwritten outputs the other has just recorded COMPLETED. Tagging them would expire them.
    store, s3 = aws
    finished, _ = copier_for(s3, {url: (200, {}, PNG) for url in TWO_URLS})
    routes = {TWO_URLS[0]: (200, {}, PNG), TWO_URLS[1]: (503, {}, b"")}
    failing, _ = copier_for(s3, routes)
    original_copy_one = failing.copy_one

    def copy_one(url: str, *args: Any, **kwargs: Any) -> Any:
        if url == TWO_URLS[1]:  # the other loop completes the job while this one is mid-copy
            store_outputs_step(completed_state(TWO_URLS), store, finished, default_prefix="o/", now=T0 + 31)
        return original_copy_one(url, *args, **kwargs)

    failing.copy_one = copy_one  # type: ignore[method-assign]
    with pytest.raises(ProviderTransientError):
        store_outputs_step(completed_state(TWO_URLS), store, failing, default_prefix="o/")
    assert store.get("job-1")["status"] == "COMPLETED"  # type: ignore[index]
    assert _tags(s3, "team/job-1/0.png") == [] and _tags(s3, "team/job-1/1.png") == []


def test_finalize_failed_records_provider_error_and_refund(aws: tuple[JobStore, Any]) -> None:
    store, _ = aws
    event = {
        "jobId": "job-1",
        "taskId": "tsk_1",
        "outcome": "FAILED",
        "polls": 4,
        "poll": {
            "status": "FAILED",
            "errorCode": "STORAGE_ERROR",
            "errorMessage": "no disk",
            "creditsRefunded": 3,
            "creditsUsed": 3,
            "deadlineExceeded": False,
            "outputUrls": [],
        },
    }
    result = finalize_step(event, store, now=T0 + 9)
    assert result["status"] == "FAILED" and result["applied"] is True
    record = store.get("job-1")
    assert record is not None
    assert record["error"] == {"source": "provider", "code": "STORAGE_ERROR", "message": "no disk"}
    assert record["creditsRefunded"] == 3 and record["polls"] == 4
    assert finalize_step(event, store, now=T0 + 10)["applied"] is False  # Step Functions retry


def test_finalize_timed_out(aws: tuple[JobStore, Any]) -> None:
    store, _ = aws
    result = finalize_step(
        {
            "jobId": "job-1",
            "taskId": "tsk_1",
            "outcome": "TIMED_OUT",
            "polls": 300,
            "poll": {"status": "PENDING", "deadlineExceeded": True},
        },
        store,
        now=T0,
    )
    assert result["status"] == "TIMED_OUT"
    assert store.get("job-1")["polls"] == 300  # type: ignore[index]


def test_finalize_error_records_pipeline_failure_without_secrets(aws: tuple[JobStore, Any]) -> None:
    store, _ = aws
    cause = json.dumps(
        {
            "errorMessage": "GET https://b.s3.amazonaws.com/k?X-Amz-Signature=SECRETSIG failed, "
            "Bearer sk_live_SECRETKEY",
            "errorType": "TaskNotFound",
            "stackTrace": ["..."],
        }
    )
    event = {**STATE, "outcome": "ERROR", "error": {"Error": "TaskNotFound", "Cause": cause}}
    result = finalize_step(event, store, now=T0)
    assert result["status"] == "FAILED"
    error = store.get("job-1")["error"]  # type: ignore[index]
    assert error["source"] == "pipeline" and error["code"] == "TaskNotFound"
    assert "SECRETSIG" not in error["message"] and "SECRETKEY" not in error["message"]
    assert "https://b.s3.amazonaws.com/k" in error["message"]


def test_finalize_error_with_plain_cause_is_trimmed(aws: tuple[JobStore, Any]) -> None:
    store, _ = aws
    event = {**STATE, "outcome": "ERROR", "error": {"Error": "States.Timeout", "Cause": "x" * 5000}}
    finalize_step(event, store, now=T0)
    error = store.get("job-1")["error"]  # type: ignore[index]
    assert error["code"] == "States.Timeout" and len(error["message"]) <= 1000


def test_finalize_rejects_unknown_outcome(aws: tuple[JobStore, Any]) -> None:
    store, _ = aws
    with pytest.raises(ValueError, match="outcome"):
        finalize_step({"jobId": "job-1", "outcome": "MAYBE"}, store)
