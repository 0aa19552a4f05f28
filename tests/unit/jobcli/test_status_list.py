from __future__ import annotations

import json
from decimal import Decimal

import pytest

from imagejobs_tools.cli import main
from tests.unit.jobcli.conftest import MockStack
from tests.unit.jobcli.support import make_record, put_output


def test_status_shows_history_credits_outputs_and_truncated_prompt(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    output = put_output(stack.s3, stack.resources.bucket_name, "outputs/done-1/0.png", b"png-bytes")
    record = make_record("done-1", "COMPLETED", prompt="word " * 40, outputs=[output], polls=4)
    record["latency"] = {"submitMs": 120, "generationSeconds": 8, "totalSeconds": Decimal("9.5")}
    stack.put(record)

    assert main(["status", "done-1", *stack.resources.target_args()]) == 0

    out = capsys.readouterr().out
    assert "COMPLETED" in out and "gpt-image-2" in out
    assert "credits" in out and " 3" in out
    for entry in record["statusHistory"]:
        assert f"{entry['at']}  {entry['status']}" in out
    assert "s3://imagejobs-outputs/outputs/done-1/0.png  9 bytes  image/png" in out
    assert "9.5s" in out
    prompt_line = next(line for line in out.splitlines() if line.startswith("prompt"))
    assert prompt_line.endswith("…") and len(prompt_line) < 100


def test_status_shows_the_chain_of_a_handed_over_job(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make_record("long-1", "SUBMITTED", polls=130)
    record["executions"] = ["long-1", "long-1-1", "long-1-2"]
    record["handovers"] = 2
    stack.put(record)

    assert main(["status", "long-1", *stack.resources.target_args()]) == 0

    [chain] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("executions")]
    assert chain.endswith("long-1 -> long-1-1 -> long-1-2")


def test_status_shows_the_error_with_field_errors(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(
        make_record(
            "bad-1",
            "REJECTED",
            error={
                "source": "validation",
                "code": "INVALID_JOB",
                "message": "the job message is invalid",
                "fieldErrors": {"aspectRatio": ["not one of 1:1, 16:9"], "prompt": ["must not be empty"]},
            },
        )
    )
    stack.put(
        make_record("refunded", "FAILED", error={"source": "provider", "code": "E1", "message": "nope"})
    )
    stack.table.update_item(
        Key={"jobId": "refunded"},
        UpdateExpression="SET creditsRefunded = :t",
        ExpressionAttributeValues={":t": True},
    )

    assert main(["status", "bad-1", "refunded", *stack.resources.target_args()]) == 0

    out = capsys.readouterr().out
    assert "error: [validation] INVALID_JOB: the job message is invalid" in out
    assert "  aspectRatio: not one of 1:1, 16:9" in out
    assert "  prompt: must not be empty" in out
    assert "error: [provider] E1: nope" in out
    assert "3 (refunded)" in out


def test_status_json_is_the_whole_record_with_plain_numbers(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make_record("j1", "SUBMITTED", polls=2)
    stack.put(record)

    assert main(["status", "j1", "--json", *stack.resources.target_args()]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("display") == {"status": "SUBMITTED", "reason": None}
    assert printed == record


def test_status_of_an_unknown_job_fails_with_a_message(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "ghost", *stack.resources.target_args()]) == 1
    assert "no record for job 'ghost'" in capsys.readouterr().err


def _seed_list(stack: MockStack) -> None:
    for minute, (job_id, status) in enumerate(
        [
            ("c-old", "COMPLETED"),
            ("f-1", "FAILED"),
            ("c-mid", "COMPLETED"),
            ("s-1", "SUBMITTED"),
            ("c-new", "COMPLETED"),
        ]
    ):
        stack.put(make_record(job_id, status, minute=minute))


def test_list_by_status_uses_the_index_newest_first_and_honours_limit(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_list(stack)
    client = stack.client()

    assert [r.job_id for r in client.list_jobs(["COMPLETED"], limit=10)] == ["c-new", "c-mid", "c-old"]
    assert [r.job_id for r in client.list_jobs(["COMPLETED"], limit=2)] == ["c-new", "c-mid"]
    assert [r.job_id for r in client.list_jobs(["COMPLETED", "FAILED"], limit=10)] == [
        "c-new", "c-mid", "f-1", "c-old",
    ]  # fmt: skip

    assert (
        main(["list", "--status", "completed", "--limit", "2", "--json", *stack.resources.target_args()]) == 0
    )
    assert [r["jobId"] for r in json.loads(capsys.readouterr().out)] == ["c-new", "c-mid"]

    assert main(["list", "--status", "FAILED", *stack.resources.target_args()]) == 0
    out = capsys.readouterr().out
    assert "f-1" in out and "FAILED" in out and "c-new" not in out


def test_list_without_status_is_newest_first_bounded_by_limit(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_list(stack)
    client = stack.client()

    everything = client.list_jobs(limit=50)
    assert [r.job_id for r in everything] == ["c-new", "s-1", "c-mid", "f-1", "c-old"]
    assert [r.job_id for r in client.list_jobs(limit=3)] == ["c-new", "s-1", "c-mid"]

    assert main(["list", "--limit", "1", "--json", *stack.resources.target_args()]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_list_reads_full_records_when_the_index_projects_keys_only(keys_only_stack: MockStack) -> None:
    _seed_list(keys_only_stack)

    records = keys_only_stack.client().list_jobs(["COMPLETED"], limit=10)

    assert [r.job_id for r in records] == ["c-new", "c-mid", "c-old"]
    assert all(r.prompt == "a lighthouse at dusk" and r.history for r in records)


def test_list_rejects_unknown_statuses(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["list", "--status", "DONE", *stack.resources.target_args()])
    assert excinfo.value.code == 2
    assert "invalid choice: 'DONE'" in capsys.readouterr().err
