from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.cli import main
from imagejobs_tools.jobcli.records import JobRecord
from imagejobs_tools.jobcli.watch import PlainView, watch_jobs
from tests.unit.jobcli.conftest import CallCounter, MockStack
from tests.unit.jobcli.support import make_record, put_output


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingView:
    def __init__(self) -> None:
        self.updates: list[dict[str, str | None]] = []

    def update(self, records: Mapping[str, JobRecord | None], elapsed: float) -> None:
        self.updates.append({job_id: (r.status if r else None) for job_id, r in records.items()})

    def close(self) -> None:
        return None


def test_watch_polls_until_records_flip_to_terminal(stack: MockStack) -> None:
    stack.put(make_record("a", "SUBMITTED"))
    stack.put(make_record("b", "RECEIVED"))
    clock = FakeClock()
    script = {
        1: [make_record("a", "COMPLETED"), make_record("b", "SUBMITTED")],
        2: [make_record("c", "REJECTED")],  # "c" had no record until now
        3: [make_record("b", "FAILED")],
    }
    ticks = 0

    def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        clock.now += seconds
        for record in script.get(ticks, []):
            stack.put(record)

    view = RecordingView()
    outcome = watch_jobs(
        stack.client(), ["a", "b", "c"], interval=2, timeout=60, view=view, clock=clock, sleep=sleep
    )

    assert not outcome.timed_out
    assert outcome.statuses() == {"a": "COMPLETED", "b": "FAILED", "c": "REJECTED"}
    assert view.updates == [
        {"a": "SUBMITTED", "b": "RECEIVED", "c": None},
        {"a": "COMPLETED", "b": "SUBMITTED", "c": None},
        {"a": "COMPLETED", "b": "SUBMITTED", "c": "REJECTED"},
        {"a": "COMPLETED", "b": "FAILED", "c": "REJECTED"},
    ]
    assert not outcome.all_in({"COMPLETED"})
    assert outcome.all_in({"COMPLETED", "FAILED", "REJECTED"})


def test_watch_gives_up_at_the_timeout(stack: MockStack) -> None:
    stack.put(make_record("slow", "SUBMITTED"))
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    outcome = watch_jobs(stack.client(), ["slow"], interval=2, timeout=7, clock=clock, sleep=sleep)

    assert outcome.timed_out
    assert outcome.statuses() == {"slow": "SUBMITTED"}
    assert outcome.ticks == 5  # at 0, 2, 4, 6 s and a last look at the 7-s deadline
    assert clock.now == 7  # it waited the whole timeout (it used to give up at 6)


def test_watch_reads_with_batch_get_100_keys_a_call_and_only_open_jobs(stack: MockStack) -> None:
    job_ids = [f"job-{i:03d}" for i in range(150)]
    with stack.table.batch_writer() as writer:
        for i, job_id in enumerate(job_ids):
            writer.put_item(Item=make_record(job_id, "COMPLETED" if i < 60 else "SUBMITTED"))
    counter = CallCounter().attach(stack.table.meta.client)
    keys_per_call: list[int] = []

    def count_keys(params: dict[str, Any], **_: Any) -> None:
        keys_per_call.append(len(params["RequestItems"][stack.resources.table_name]["Keys"]))

    stack.table.meta.client.meta.events.register("provide-client-params.dynamodb.BatchGetItem", count_keys)
    clock = FakeClock()
    calls_per_tick: list[int] = []

    def sleep(seconds: float) -> None:
        calls_per_tick.append(counter.calls.get("BatchGetItem", 0) - sum(calls_per_tick))
        clock.now += seconds
        if len(calls_per_tick) == 1:
            with stack.table.batch_writer() as writer:
                for job_id in job_ids[60:]:
                    writer.put_item(Item=make_record(job_id, "COMPLETED"))

    outcome = watch_jobs(stack.client(), job_ids, interval=1, timeout=30, clock=clock, sleep=sleep)

    assert outcome.all_in({"COMPLETED"})
    assert calls_per_tick == [2]  # 150 ids → 2 calls on the first tick
    assert keys_per_call == [100, 50, 90]  # the second tick asks only for the 90 open jobs
    assert counter.calls["BatchGetItem"] == 3
    assert "GetItem" not in counter.calls


def test_watch_command_prints_plain_lines_and_a_summary_exit_0_when_all_completed(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    output = put_output(stack.s3, stack.resources.bucket_name, "outputs/w1/0.png", b"\x89PNG")
    stack.put(make_record("w1", "COMPLETED", outputs=[output], polls=3))
    stack.put(make_record("w2", "COMPLETED", model="other-model"))
    Path("ids.txt").write_text("# my jobs\nw2\n\n")

    exit_code = main(
        ["watch", "w1", "--file", "ids.txt", "--interval", "0.01", *stack.resources.target_args()]
    )

    captured = capsys.readouterr()
    assert exit_code == 0
    assert "w1  COMPLETED, 3 polls" in captured.err  # the plain (non-terminal) progress lines
    assert "2 jobs: 2 COMPLETED" in captured.err
    summary = captured.out.splitlines()
    assert summary[0].split() == ["jobId", "status", "model", "credits", "latency", "outputs"]
    w1_row = next(line for line in summary if line.startswith("w1"))
    assert w1_row.split() == ["w1", "COMPLETED", "gpt-image-2", "3", "15.0s", "outputs/w1/0.png"]
    assert "other-model" in next(line for line in summary if line.startswith("w2"))


def test_watch_command_exit_1_when_a_job_is_not_completed_unless_expected(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(make_record("ok", "COMPLETED"))
    stack.put(make_record("bad", "REJECTED"))
    args = ["watch", "ok", "bad", "--interval", "0.01", *stack.resources.target_args()]

    assert main(args) == 1
    assert "1 COMPLETED, 1 REJECTED" in capsys.readouterr().err
    assert main([*args, "--expect", "COMPLETED", "--expect", "rejected"]) == 0


def test_watch_command_times_out_with_exit_1_and_json_summary(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(make_record("stuck", "SUBMITTED"))

    exit_code = main(
        ["watch", "stuck", "never-seen", "--interval", "0.01", "--timeout", "0.02", "--json",
         *stack.resources.target_args()]
    )  # fmt: skip

    captured = capsys.readouterr()
    assert exit_code == 1
    summary = json.loads(captured.out)
    assert summary["timedOut"] is True
    assert [(j["jobId"], j["status"]) for j in summary["jobs"]] == [
        ("stuck", "SUBMITTED"),
        ("never-seen", None),
    ]
    assert "timed out after 0.02s" in captured.err and "1 NO_RECORD" in captured.err


def test_watch_since_submit_follows_the_last_submitted_jobs(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "one", "--job-id", "last-1", *stack.resources.target_args()]) == 0
    stack.put(make_record("last-1", "COMPLETED"))
    capsys.readouterr()

    assert (
        main(["watch", "--since-submit", "--interval", "0.01", "--json", *stack.resources.target_args()]) == 0
    )
    assert [j["jobId"] for j in json.loads(capsys.readouterr().out)["jobs"]] == ["last-1"]


def test_watch_without_ids_is_a_usage_error(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["watch", *stack.resources.target_args()])
    assert excinfo.value.code == 2
    assert "no job ids" in capsys.readouterr().err


def test_plain_view_prints_a_line_only_when_a_status_changes(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    view = PlainView(Console(soft_wrap=True))
    submitted = JobRecord.from_item(make_record("x", "SUBMITTED"))
    view.update({"x": None}, 0.0)
    view.update({"x": submitted}, 1.0)
    view.update({"x": submitted}, 2.0)
    view.update({"x": JobRecord.from_item(make_record("x", "COMPLETED"))}, 3.0)

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in lines] == [
        "x  waiting for a record",
        "x  SUBMITTED",
        "x  COMPLETED",
    ]


@pytest.mark.parametrize("job_count", [3, 60])
def test_progress_view_on_a_terminal_shows_each_job_or_overall_counts(job_count: int) -> None:
    import io

    from rich.console import Console

    from imagejobs_tools.jobcli.watch import MAX_JOB_BARS, make_view

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    job_ids = [f"tty-{i}" for i in range(job_count)]
    view = make_view(console, job_ids)
    records: dict[str, JobRecord | None] = dict.fromkeys(job_ids)
    records["tty-0"] = JobRecord.from_item(make_record("tty-0", "COMPLETED", polls=5))
    records["tty-1"] = JobRecord.from_item(make_record("tty-1", "SUBMITTED", polls=2))
    view.update(records, 1.0)
    view.close()

    screen = buffer.getvalue()
    if job_count <= MAX_JOB_BARS:
        assert "tty-0" in screen and "COMPLETED, 5 polls" in screen
        assert "tty-1" in screen and "SUBMITTED, 2 polls" in screen
        assert "tty-2" in screen and "waiting for a record" in screen
    else:
        assert f"{job_count} jobs" in screen
        assert f"COMPLETED=1 NO_RECORD={job_count - 2} SUBMITTED=1" in screen
