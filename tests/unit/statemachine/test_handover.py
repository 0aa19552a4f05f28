"""EXPRESS executions stop after 5 minutes: the poll step asks for a handover before that, and the
state machine starts a fresh execution `<jobId>-<n>` carrying the job's state, then succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from imagejobs.provider import TaskSnapshot, TaskStatus
from imagejobs.workflow import poll_step

from imagejobs_tools.local import moto_fixes

from .conftest import FUNCTION_PLACEHOLDERS, StateMachineHarness
from .test_job_state_machine import install, poll_result

POLL = FUNCTION_PLACEHOLDERS["PollFunctionArn"]
STORE = FUNCTION_PLACEHOLDERS["StoreOutputsFunctionArn"]


@pytest.fixture(autouse=True)
def moto_start_execution_parameter_names() -> Iterator[None]:
    """moto 5.2.5's `states:startExecution` hands AWS's parameter names to botocore unchanged:
    the local stack's fix (imagejobs_tools.local.moto_fixes) renames them, as AWS does."""
    undo = moto_fixes.install()
    try:
        yield
    finally:
        undo()


def handover_input() -> dict[str, Any]:
    return {
        "jobId": "long-job",
        "taskId": "tsk_long",
        "kind": "image",
        "pollIntervalSeconds": 0,
        "deadline": 4102444800.0,
        "polls": 0,
        "handoverAfterSeconds": 240,
    }


def test_long_job_hands_over_to_a_fresh_execution_and_completes_there(
    state_machine: StateMachineHarness,
) -> None:
    # Poll 1 pending; poll 2 says the execution is near its limit; the fresh execution's first
    # poll (poll 3 overall) finds the task completed.
    due = {**poll_result("PENDING"), "handoverDue": True, "handovers": 1, "nextExecutionName": "long-job-1"}
    steps = iter([poll_result("PENDING"), due, poll_result("COMPLETED")])

    def poll(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "polls": state["polls"] + 1, "poll": next(steps)}

    install(state_machine, poll)
    state_machine.table.put_item(Item={"jobId": "long-job", "status": "SUBMITTED"})

    first = state_machine.run(handover_input())

    assert first.status == "SUCCEEDED"
    assert first.entered_states[-3:] == ["ClaimHandOver", "HandOver", "HandedOver"]
    assert "StoreOutputs" not in first.entered_states
    assert first.output is not None
    assert first.output["poll"]["nextExecutionName"] == "long-job-1"

    assert wait_finished(state_machine, "long-job-1")["status"] == "SUCCEEDED"

    polls = state_machine.fakes.events_for(POLL)
    assert [event["polls"] for event in polls] == [0, 1, 2]  # the count carries over
    carried = polls[2]
    assert carried["jobId"] == "long-job"
    assert carried["taskId"] == "tsk_long"
    assert carried["deadline"] == 4102444800.0
    assert carried["handoverAfterSeconds"] == 240
    assert carried["handovers"] == 1
    assert carried["previousExecution"].endswith(":long-job")  # the chain, newest to oldest
    assert "poll" not in carried  # the summary is not carried over: a fresh loop starts
    [stored] = state_machine.fakes.events_for(STORE)
    assert stored["jobId"] == "long-job"
    assert stored["poll"]["status"] == "COMPLETED"
    # ClaimHandOver: the record names the executions that carried the job, oldest first.
    record = state_machine.table.get_item(Key={"jobId": "long-job"})["Item"]
    assert record["executions"] == ["long-job", "long-job-1"]
    assert record["handovers"] == 1


def execution_exists(state_machine: StateMachineHarness, name: str) -> bool:
    try:
        state_machine.client.describe_execution(executionArn=state_machine.execution_arn(name))
    except state_machine.client.exceptions.ExecutionDoesNotExist:
        return False
    return True


def due_then(job_id: str, *, handovers: int = 1) -> Any:
    """A poll script: the first poll asks for hand-over n, every later one says COMPLETED."""
    due = {
        **poll_result("PENDING"),
        "handoverDue": True,
        "handovers": handovers,
        "nextExecutionName": f"{job_id}-{handovers}",
    }
    calls: list[int] = []

    def poll(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return {
            **state,
            "polls": state["polls"] + 1,
            "poll": due if len(calls) == 1 else poll_result("COMPLETED"),
        }

    return poll


def test_a_finished_job_is_not_handed_over(state_machine: StateMachineHarness) -> None:
    # The job was recorded terminal meanwhile (e.g. a duplicate loop stored it): nothing to carry on.
    install(state_machine, due_then("late-job"))
    state_machine.table.put_item(Item={"jobId": "late-job", "status": "COMPLETED"})
    result = state_machine.run({**handover_input(), "jobId": "late-job"})
    assert result.status == "SUCCEEDED"
    assert result.entered_states[-2:] == ["ClaimHandOver", "Superseded"]
    assert not execution_exists(state_machine, "late-job-1")
    record = state_machine.table.get_item(Key={"jobId": "late-job"})["Item"]
    assert record == {"jobId": "late-job", "status": "COMPLETED"}


def test_a_duplicate_loop_stops_at_the_hand_over_another_loop_claimed(
    state_machine: StateMachineHarness,
) -> None:
    # EXPRESS does not dedupe names: a HandOver retried after a lost response can start a second
    # `dup-1`. Both reach the next limit; the first claims `dup-2`, the second finds it claimed.
    install(state_machine, due_then("dup", handovers=2))
    record = {"jobId": "dup", "status": "SUBMITTED", "executions": ["dup", "dup-1", "dup-2"], "handovers": 2}
    state_machine.table.put_item(Item=record)
    result = state_machine.run({**handover_input(), "jobId": "dup"})
    assert result.entered_states[-2:] == ["ClaimHandOver", "Superseded"]
    assert not execution_exists(state_machine, "dup-2")  # not started by this loop
    assert state_machine.table.get_item(Key={"jobId": "dup"})["Item"] == record


def test_without_the_record_the_job_is_still_handed_over(state_machine: StateMachineHarness) -> None:
    # DynamoDB unavailable (here: no table): the claim is skipped, never the hand-over.
    install(state_machine, due_then("lone"))
    state_machine.table.delete()
    result = state_machine.run({**handover_input(), "jobId": "lone"})
    assert result.entered_states[-3:] == ["ClaimHandOver", "HandOver", "HandedOver"]
    assert wait_finished(state_machine, "lone-1")["status"] == "SUCCEEDED"


def wait_finished(state_machine: StateMachineHarness, name: str) -> dict[str, Any]:
    return state_machine.finished(state_machine.execution_arn(name))


class OnePollProvider:
    def __init__(self, status: TaskStatus) -> None:
        self.status = status

    def get_task(self, task_id: str) -> TaskSnapshot:
        return TaskSnapshot(
            task_id=task_id, kind="image", status=self.status, output_urls=(), error_code=None,
            error_message=None, credits_used=3, credits_refunded=None, created_at=None,
            completed_at=None, updated_at=None, raw={},
        )  # fmt: skip


def test_poll_step_reports_handover_due_once_the_execution_has_run_its_limit() -> None:
    state = {**handover_input(), "pollIntervalSeconds": 2, "segmentStartedAt": 1000.0, "handovers": 2}
    pending = OnePollProvider(TaskStatus.PENDING)

    early = poll_step(state, pending, now=lambda: 1000.0 + 239)
    late = poll_step(state, pending, now=lambda: 1000.0 + 240)

    assert early["poll"]["handoverDue"] is False
    assert "nextExecutionName" not in early["poll"]
    assert late["poll"]["handoverDue"] is True
    assert late["poll"]["handovers"] == 3
    assert late["poll"]["nextExecutionName"] == "long-job-3"
    # A finished task is stored, never handed over.
    assert (
        poll_step(state, OnePollProvider(TaskStatus.COMPLETED), now=lambda: 2000.0)["poll"]["handoverDue"]
        is False
    )


def test_a_handed_over_execution_starts_its_own_clock_on_its_first_poll() -> None:
    state = {**handover_input(), "pollIntervalSeconds": 2}  # no segmentStartedAt: a successor
    first = poll_step(state, OnePollProvider(TaskStatus.PENDING), now=lambda: 5000.0)
    assert first["segmentStartedAt"] == 4998.0
    assert first["poll"]["handoverDue"] is False
    later = poll_step(first, OnePollProvider(TaskStatus.PENDING), now=lambda: 4998.0 + 240)
    assert later["poll"]["handoverDue"] is True


def test_without_a_limit_the_poll_summary_is_unchanged() -> None:
    state = {key: value for key, value in handover_input().items() if key != "handoverAfterSeconds"}
    out = poll_step(state, OnePollProvider(TaskStatus.PENDING), now=lambda: 5000.0)
    assert "handoverDue" not in out["poll"]
    assert "segmentStartedAt" not in out
