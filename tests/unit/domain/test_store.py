from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from imagejobs.store import JobStatus, JobStore, iso, parse_iso, to_dynamo
from moto import mock_aws

from tests.unit.domain.fakes import create_jobs_table

T0 = 1_767_225_600.0
REQUEST = {"jobId": "j1", "kind": "image", "model": "gpt-image-2", "prompt": "a fox"}


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        yield create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1"))


@pytest.fixture
def store(table: Any) -> JobStore:
    return JobStore(table)


def submitted(store: JobStore, job_id: str = "j1") -> None:
    store.create_received(job_id, {**REQUEST, "jobId": job_id}, now=T0)
    assert store.claim_for_submit(job_id, 60, now=T0 + 1).applied
    assert store.mark_submitted(job_id, "tsk_1", 3, "arn:exec", submit_ms=120, now=T0 + 2).applied


def test_iso_is_utc_millis_and_round_trips() -> None:
    assert iso(T0) == "2026-01-01T00:00:00.000Z"
    assert parse_iso(iso(T0 + 1.5)) == T0 + 1.5


def test_floats_become_decimal() -> None:
    converted = to_dynamo({"a": 1.5, "b": [2.25, {"c": 0.1}], "d": 3, "e": True, "f": float("nan")})
    assert converted == {
        "a": Decimal("1.5"),
        "b": [Decimal("2.25"), {"c": Decimal("0.1")}],
        "d": 3,
        "e": True,
        "f": "nan",
    }


def test_create_received_then_duplicate_returns_existing(store: JobStore) -> None:
    first = store.create_received("j1", REQUEST, now=T0)
    assert first.applied and first.status == JobStatus.RECEIVED
    again = store.create_received("j1", {**REQUEST, "prompt": "other"}, now=T0 + 5)
    assert not again.applied and again.status == JobStatus.RECEIVED
    record = store.get("j1")
    assert record is not None
    assert record["prompt"] == "a fox"
    assert record["statusHistory"] == [{"status": "RECEIVED", "at": iso(T0)}]
    assert record["createdAt"] == record["updatedAt"] == iso(T0)
    assert record["request"] == REQUEST


def test_full_happy_path_history_and_fields(store: JobStore) -> None:
    submitted(store)
    outputs = [
        {
            "uri": "s3://b/k/0.png",
            "bucket": "b",
            "key": "k/0.png",
            "bytes": 10,
            "sha256": "ab",
            "contentType": "image/png",
        }
    ]
    done = store.mark_completed(
        "j1",
        outputs,
        credits_used=3,
        credits_refunded=0,
        polls=4,
        latency={"submitMs": 120, "generationSeconds": 7.25},
        now=T0 + 10,
    )
    assert done.applied
    record = store.get("j1")
    assert record is not None
    assert [h["status"] for h in record["statusHistory"]] == [
        "RECEIVED",
        "SUBMITTING",
        "SUBMITTED",
        "COMPLETED",
    ]
    assert record["taskId"] == "tsk_1"
    assert record["creditsUsed"] == 3
    assert record["submitAttempts"] == 1
    assert record["executionArn"] == "arn:exec"
    assert record["outputs"] == outputs
    assert record["latency"]["generationSeconds"] == 7.25
    assert record["polls"] == 4
    assert record["updatedAt"] == iso(T0 + 10)
    assert "leaseExpiresAt" not in record


def test_claim_is_exclusive(store: JobStore) -> None:
    store.create_received("j1", REQUEST, now=T0)
    first = store.claim_for_submit("j1", 60, now=T0)
    second = store.claim_for_submit("j1", 60, now=T0)
    assert first.applied and first.record is not None
    assert first.record["leaseExpiresAt"] == T0 + 60
    assert not second.applied and second.status == JobStatus.SUBMITTING
    assert "SUBMITTING" in second.reason


def test_release_claim_allows_another_claim(store: JobStore) -> None:
    store.create_received("j1", REQUEST, now=T0)
    store.claim_for_submit("j1", 60, now=T0)
    released = store.release_claim("j1", {"code": "RateLimited", "message": "429"}, now=T0 + 1)
    assert released.applied and released.status == JobStatus.RECEIVED
    assert released.record is not None and released.record["lastSubmitError"]["code"] == "RateLimited"
    again = store.claim_for_submit("j1", 60, now=T0 + 2)
    assert again.applied and again.record is not None and again.record["submitAttempts"] == 2


def test_mark_submitted_requires_the_claim(store: JobStore) -> None:
    store.create_received("j1", REQUEST, now=T0)
    result = store.mark_submitted("j1", "tsk", 3, "arn", now=T0)
    assert not result.applied and result.status == JobStatus.RECEIVED


def test_repeated_transition_reports_already(store: JobStore) -> None:
    submitted(store)
    again = store.mark_submitted("j1", "tsk_2", 3, "arn:exec", now=T0 + 3)
    assert not again.applied and again.reason == "already SUBMITTED"
    # The record it reports is the one that won: the first submission's.
    assert again.record is not None and again.record["taskId"] == "tsk_1"


@pytest.mark.parametrize("terminal", ["COMPLETED", "FAILED", "TIMED_OUT"])
def test_terminal_states_are_never_overwritten(store: JobStore, terminal: str) -> None:
    submitted(store)
    if terminal == "COMPLETED":
        store.mark_completed("j1", [], now=T0 + 5)
    elif terminal == "FAILED":
        store.mark_failed("j1", source="provider", code="X", message="m", credits_refunded=3, now=T0 + 5)
    else:
        store.mark_timed_out("j1", polls=9, now=T0 + 5)
    attempts = [
        store.mark_completed("j1", [], now=T0 + 6),
        store.mark_failed("j1", source="pipeline", code="Y", message="m", now=T0 + 6),
        store.mark_timed_out("j1", now=T0 + 6),
        store.claim_for_submit("j1", 60, now=T0 + 6),
        store.release_claim("j1", {"code": "x"}, now=T0 + 6),
        store.mark_submit_unknown("j1", "r", now=T0 + 6),
    ]
    record = store.get("j1")
    assert record is not None and record["status"] == terminal
    assert record["updatedAt"] == iso(T0 + 5)
    assert not any(a.applied for a in attempts)
    assert all(a.status == terminal for a in attempts)


def test_put_rejected_never_replaces_a_record(store: JobStore) -> None:
    submitted(store)
    result = store.put_rejected("j1", {"prompt": ["is required"]}, now=T0 + 5)
    assert not result.applied and result.status == JobStatus.SUBMITTED


def test_put_rejected_records_field_errors(store: JobStore) -> None:
    result = store.put_rejected("bad1", {"prompt": ["is required"]}, request={"prompt": ""}, now=T0)
    assert result.applied
    record = store.get("bad1")
    assert record is not None and record["status"] == "REJECTED"
    assert record["error"]["source"] == "validation"
    assert record["error"]["fieldErrors"] == {"prompt": ["is required"]}


def test_provider_rejection_and_unknown_only_from_submitting(store: JobStore) -> None:
    store.create_received("j1", REQUEST, now=T0)
    assert not store.mark_rejected("j1", {"prompt": ["bad"]}, message="400", now=T0).applied
    store.claim_for_submit("j1", 60, now=T0)
    rejected = store.mark_rejected("j1", {"prompt": ["bad"]}, message="400", now=T0 + 1)
    assert rejected.applied and rejected.record is not None
    assert rejected.record["error"] == {
        "source": "provider",
        "code": "PROVIDER_REJECTED",
        "message": "400",
        "fieldErrors": {"prompt": ["bad"]},
    }
    store.create_received("j2", {**REQUEST, "jobId": "j2"}, now=T0)
    store.claim_for_submit("j2", 60, now=T0)
    unknown = store.mark_submit_unknown("j2", "read timeout", now=T0 + 1)
    assert unknown.applied and unknown.status == "SUBMIT_UNKNOWN"
    noted = store.note_task_on_unknown("j2", "tsk_late", 3, now=T0 + 2)
    assert noted.applied and noted.status == "SUBMIT_UNKNOWN"
    assert noted.record is not None and noted.record["taskId"] == "tsk_late"


def test_missing_job_transitions_report_no_such_job(store: JobStore) -> None:
    result = store.mark_failed("nope", source="pipeline", code="x", message="m", now=T0)
    assert (result.applied, result.status, result.reason) == (False, None, "no such job")
    assert store.get("nope") is None


def test_concurrent_claims_only_one_wins(table: Any) -> None:
    # Two stores over the same table stand in for two Lambda workers.
    worker_a, worker_b = JobStore(table), JobStore(table)
    worker_a.create_received("j1", REQUEST, now=T0)
    results = [worker_a.claim_for_submit("j1", 60, now=T0), worker_b.claim_for_submit("j1", 60, now=T0)]
    assert sorted(r.applied for r in results) == [False, True]


def test_list_by_status_newest_first_and_since(store: JobStore) -> None:
    for index in range(5):
        store.create_received(f"j{index}", {**REQUEST, "jobId": f"j{index}"}, now=T0 + index)
    submitted(store, "j9")
    listed = store.list_by_status("RECEIVED", limit=3)
    assert [r["jobId"] for r in listed] == ["j4", "j3", "j2"]
    since = store.list_by_status("RECEIVED", limit=10, since=T0 + 3)
    assert [r["jobId"] for r in since] == ["j4", "j3"]
    assert [r["jobId"] for r in store.list_by_status("SUBMITTED")] == ["j9"]


class ResentAfterLostResponse:
    """A table whose every write is applied, then sent again with the same parameters: what botocore
    does when the connection breaks after DynamoDB applied the request (a reset, a read timeout)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def update_item(self, **parameters: Any) -> Any:
        self._table.update_item(**parameters)
        return self._table.update_item(**parameters)

    def put_item(self, **parameters: Any) -> Any:
        self._table.put_item(**parameters)
        return self._table.put_item(**parameters)


def test_a_write_resent_after_its_response_was_lost_reports_itself_applied(table: Any) -> None:
    store = JobStore(ResentAfterLostResponse(table))
    assert store.create_received("j1", REQUEST, now=T0).applied
    claim = store.claim_for_submit("j1", 60, now=T0 + 1)
    assert claim.applied and claim.status == JobStatus.SUBMITTING  # not "lost the claim race"
    marked = store.mark_submitted("j1", "tsk_1", 3, "arn:exec", now=T0 + 2)
    assert marked.applied and marked.status == JobStatus.SUBMITTED  # so intake starts the execution
    assert store.mark_completed("j1", [], now=T0 + 3).applied
    assert store.put_rejected("j2", {"prompt": ["missing"]}, now=T0).applied


def test_another_writers_change_is_still_not_applied(store: JobStore) -> None:
    submitted(store)
    other = store.claim_for_submit("j1", 60, now=T0 + 3)
    assert not other.applied and other.status == JobStatus.SUBMITTED


def test_a_failed_condition_answers_from_the_record_it_saw_without_reading_it_again(
    table: Any, store: JobStore
) -> None:
    store.create_received("j1", REQUEST, now=T0)
    reads: list[str] = []
    table.meta.client.meta.events.register("before-call.dynamodb.GetItem", lambda **kw: reads.append("get"))
    refused = store.mark_completed("j1", [], polls=1, now=T0 + 1)  # only from SUBMITTED
    duplicate = store.create_received("j1", {**REQUEST, "prompt": "other"}, now=T0 + 2)
    assert not refused.applied and refused.record is not None and refused.record["status"] == "RECEIVED"
    assert "expected SUBMITTED" in refused.reason
    assert not duplicate.applied and duplicate.record is not None and duplicate.record["prompt"] == "a fox"
    assert reads == []  # ReturnValuesOnConditionCheckFailure=ALL_OLD: one round trip each
