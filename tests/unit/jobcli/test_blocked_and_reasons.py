"""Issue 13, items 4 and 6: blocked and dead-lettered jobs shown as such; `list` newest first with reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagejobs_tools.cli import main
from tests.unit.jobcli.conftest import MockStack
from tests.unit.jobcli.support import make_record

UNAUTHORIZED = {
    "code": "ProviderUnauthorized",
    "message": "provider rejected the API key (401 Unauthorized)",
    "at": "2026-01-01T12:00:01.000Z",
}
NO_CREDITS = {"code": "InsufficientCredits", "message": "insufficient provider credits (12 required)"}


def _received(job_id: str, last_error: dict[str, Any] | None = None, minute: int = 0) -> dict[str, Any]:
    record = make_record(job_id, "RECEIVED", minute=minute)
    record["submitAttempts"] = 2
    if last_error is not None:
        record["lastSubmitError"] = last_error
    return record


def test_status_shows_a_job_blocked_by_a_bad_key_with_its_reason_and_json_adds_display(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(_received("key-1", UNAUTHORIZED))
    stack.put(_received("slow-1", {"code": "RateLimited", "message": "rate limited by the provider (429)"}))

    assert main(["status", "key-1", "slow-1", *stack.resources.target_args()]) == 0
    out = capsys.readouterr().out
    status_rows = [line for line in out.splitlines() if line.startswith("status")]
    assert status_rows[0].split(None, 1)[1] == "BLOCKED (provider rejected the API key (401 Unauthorized))"
    # A 429 is transient: still RECEIVED, but the last submit error is shown, not only in --json.
    assert status_rows[1].split() == ["status", "RECEIVED"]
    assert "lastSubmitError  RateLimited: rate limited by the provider (429)" in out

    assert main(["status", "key-1", "--json", *stack.resources.target_args()]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "RECEIVED" and printed["lastSubmitError"] == UNAUTHORIZED  # raw record kept
    assert printed["display"] == {
        "status": "BLOCKED",
        "reason": "provider rejected the API key (401 Unauthorized)",
    }


def test_list_is_newest_first_by_query_never_a_scan(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = ["COMPLETED", "FAILED", "SUBMITTED", "REJECTED", "RECEIVED", "TIMED_OUT"]
    for minute in range(40):
        stack.put(make_record(f"job-{minute:02d}", statuses[minute % len(statuses)], minute=minute))
    calls: list[tuple[str, dict[str, Any]]] = []
    client = stack.client()
    events = stack.table.meta.client.meta.events
    events.register(
        "provide-client-params.dynamodb.*", lambda params, model, **_: calls.append((model.name, params))
    )

    newest = client.list_jobs(limit=5)

    assert [record.job_id for record in newest] == ["job-39", "job-38", "job-37", "job-36", "job-35"]
    assert {name for name, _ in calls} == {"Query"}
    assert all(params["ScanIndexForward"] is False and params["Limit"] <= 5 for _, params in calls)

    assert main(["list", "--limit", "5", "--json", *stack.resources.target_args()]) == 0
    assert [r["jobId"] for r in json.loads(capsys.readouterr().out)] == [
        "job-39", "job-38", "job-37", "job-36", "job-35",
    ]  # fmt: skip


def test_list_shows_a_reason_for_rejected_failed_blocked_jobs_and_a_rejected_upload_s_key(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(
        make_record(
            "bad-msg",
            "REJECTED",
            minute=1,
            error={
                "source": "validation",
                "code": "VALIDATION_FAILED",
                "message": "the job message failed validation",
                "fieldErrors": {"prompt": ["must not be empty"], "model": ["unknown"]},
            },
        )
    )
    upload = make_record(
        "upload-1",
        "REJECTED",
        minute=2,
        error={
            "source": "validation",
            "code": "VALIDATION_FAILED",
            "message": "upload s3://imagejobs-outputs/inputs/cat.txt cannot become a job",
            "fieldErrors": {"upload": ["is not an image (text; expected PNG, JPEG, WebP or GIF)"]},
        },
    )
    upload["upload"] = {
        "bucket": "imagejobs-outputs",
        "key": "inputs/cat.txt",
        "uri": "s3://imagejobs-outputs/inputs/cat.txt",
    }
    stack.put(upload)
    stack.put(
        make_record(
            "fail-1", "FAILED", minute=3, error={"source": "provider", "code": "E1", "message": "nope"}
        )
    )
    stack.put(_received("broke-1", NO_CREDITS, minute=4))
    stack.put(make_record("done-1", "COMPLETED", minute=5))

    assert main(["list", *stack.resources.target_args()]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["jobId", "status", "updated", "model", "credits", "reason", "prompt"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["done-1", "broke-1", "fail-1", "upload-1", "bad-msg"]
    assert rows["broke-1"].split()[1] == "BLOCKED"
    assert "insufficient provider credits (12 required)" in rows["broke-1"]
    assert "E1: nope" in rows["fail-1"]
    assert "inputs/cat.txt: upload: is not an image" in rows["upload-1"]
    assert "prompt: must not be empty" in rows["bad-msg"]
    reason_at = lines[0].index("reason")
    assert rows["done-1"][reason_at:].startswith("- ")


def test_watch_reports_a_blocked_job_once_with_its_reason_and_the_summary_says_blocked(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(_received("key-1", UNAUTHORIZED))

    exit_code = main(
        ["watch", "key-1", "--interval", "0.01", "--timeout", "0.2", *stack.resources.target_args()]
    )

    captured = capsys.readouterr()
    assert exit_code == 1
    progress = [line for line in captured.err.splitlines() if "key-1" in line]
    assert len(progress) == 1  # said once, not once a tick
    assert progress[0].endswith("key-1  BLOCKED: provider rejected the API key (401 Unauthorized)")
    assert "1 job: 1 BLOCKED" in captured.err
    assert "1 job blocked (provider rejected the API key (401 Unauthorized))" in captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("key-1"))
    assert row.split()[1] == "BLOCKED" and "provider rejected the API key" in row


def test_a_dead_lettered_job_is_shown_as_such_and_watch_stops_waiting_for_it(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    record = _received("dlq-1", UNAUTHORIZED)
    record["deadLettered"] = {
        "at": "2026-01-01T13:00:00.000Z",
        "reason": "provider error: ProviderUnauthorized (receive 5 of 5)",
        "receiveCount": 5,
    }
    stack.put(record)

    assert main(["status", "dlq-1", *stack.resources.target_args()]) == 0
    status_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("status"))
    assert status_row.split(None, 1)[1] == (
        "DEAD_LETTERED (record RECEIVED; message moved to the dead-letter queue: "
        "provider error: ProviderUnauthorized (receive 5 of 5))"
    )

    # No timeout reached: nothing changes for this job until someone redrives its message.
    exit_code = main(
        ["watch", "dlq-1", "--interval", "0.01", "--timeout", "60", "--json", *stack.resources.target_args()]
    )
    captured = capsys.readouterr()
    assert exit_code == 1
    summary = json.loads(captured.out)
    assert summary["timedOut"] is False
    assert summary["jobs"][0]["display"]["status"] == "DEAD_LETTERED"
    assert "1 job: 1 DEAD_LETTERED" in captured.err
