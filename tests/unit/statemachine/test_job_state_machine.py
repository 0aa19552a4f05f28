"""Behaviour of statemachine/job.asl.json, executed by moto's Step Functions engine."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import (
    ASL_PATH,
    FUNCTION_PLACEHOLDERS,
    OTHER_PLACEHOLDERS,
    LambdaError,
    StateMachineHarness,
    substitute_definition,
)

POLL = FUNCTION_PLACEHOLDERS["PollFunctionArn"]
STORE = FUNCTION_PLACEHOLDERS["StoreOutputsFunctionArn"]
FINALIZE = FUNCTION_PLACEHOLDERS["FinalizeFunctionArn"]

OUTPUT_URLS = ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"]


def execution_input(job_id: str = "job-1") -> dict[str, Any]:
    # pollIntervalSeconds 0: the Wait state is real time in the engine.
    return {
        "jobId": job_id,
        "taskId": "tsk_1",
        "kind": "image",
        "pollIntervalSeconds": 0,
        "deadline": 1767225600.0,
        "polls": 0,
    }


def poll_result(status: str, deadline_exceeded: bool = False) -> dict[str, Any]:
    return {
        "status": status,
        "deadlineExceeded": deadline_exceeded,
        "outputUrls": OUTPUT_URLS if status == "COMPLETED" else [],
        "errorCode": "STORAGE_ERROR" if status == "FAILED" else None,
        "errorMessage": "could not persist" if status == "FAILED" else None,
        "creditsUsed": 3,
        "creditsRefunded": status == "FAILED",
    }


def scripted_poll(*steps: dict[str, Any] | LambdaError) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A PollFunction that plays `steps` in order (a LambdaError is raised), as the contract says:
    the same state back with polls + 1 and a `poll` summary."""
    remaining: Iterator[dict[str, Any] | LambdaError] = iter(steps)

    def handler(state: dict[str, Any]) -> dict[str, Any]:
        step = next(remaining)
        if isinstance(step, LambdaError):
            raise step
        return {**state, "polls": state["polls"] + 1, "poll": step}

    return handler


def store_ok(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "jobId": state["jobId"],
        "outputs": [{"uri": f"s3://bucket/{i}"} for i in state["poll"]["outputUrls"]],
    }


def finalize_ok(event: dict[str, Any]) -> dict[str, Any]:
    return {"jobId": event["jobId"], "status": "recorded", "refundRecheckAfterSeconds": 0, "refundChecks": 0}


def install(
    harness: StateMachineHarness,
    poll: Callable[[dict[str, Any]], Any],
    store: Callable[[dict[str, Any]], Any] = store_ok,
    finalize: Callable[[dict[str, Any]], Any] = finalize_ok,
) -> None:
    harness.fakes.handlers.update({POLL: poll, STORE: store, FINALIZE: finalize})


def test_pending_twice_then_completed_stores_outputs_and_succeeds(state_machine: StateMachineHarness) -> None:
    pending = poll_result("PENDING")
    install(state_machine, scripted_poll(pending, pending, poll_result("COMPLETED")))

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    loop = ["WaitBeforePoll", "Poll", "CheckPollResult"]
    assert result.entered_states == loop * 3 + ["StoreOutputs", "JobCompleted"]
    poll_events = state_machine.fakes.events_for(POLL)
    # Each poll sees the previous poll's state without the Lambda envelope, so the state stays small.
    assert [event["polls"] for event in poll_events] == [0, 1, 2]
    assert all(set(event) <= {*execution_input(), "poll"} for event in poll_events)
    [stored] = state_machine.fakes.events_for(STORE)
    assert stored["jobId"] == "job-1"
    assert stored["taskId"] == "tsk_1"
    assert stored["polls"] == 3
    assert stored["poll"]["outputUrls"] == OUTPUT_URLS
    assert state_machine.fakes.events_for(FINALIZE) == []
    assert result.output is not None
    assert result.output["stored"]["result"]["jobId"] == "job-1"
    assert "Payload" not in result.output


def test_provider_failure_is_recorded_as_failed_and_execution_succeeds(
    state_machine: StateMachineHarness,
) -> None:
    failed = poll_result("FAILED")
    install(state_machine, scripted_poll(failed))

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    assert result.entered_states[-3:] == ["RecordFailed", "RefundPending", "ProviderFailureRecorded"]
    assert state_machine.fakes.events_for(FINALIZE) == [
        {"jobId": "job-1", "taskId": "tsk_1", "outcome": "FAILED", "poll": failed, "polls": 1}
    ]
    assert state_machine.fakes.events_for(STORE) == []


def finalize_awaiting_refund(rechecks: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """FinalizeFunction as `refund_recheck_after` answers while no refund shows: a 1-s wait (the
    engine waits in real time, whole seconds) after FAILED and each recheck, `rechecks` times."""

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        checks = event["refundChecks"] + 1 if event["outcome"] == "REFUND" else 0
        more = checks < rechecks and not event["poll"]["creditsRefunded"]
        recheck = {"refundRecheckAfterSeconds": 1 if more else 0, "refundChecks": checks}
        return finalize_ok(event) | recheck

    return handler


def test_a_failure_without_its_refund_reads_the_task_again_until_the_refund_shows(
    state_machine: StateMachineHarness,
) -> None:
    unrefunded = poll_result("FAILED") | {"creditsRefunded": False}
    install(
        state_machine,
        scripted_poll(unrefunded, unrefunded, poll_result("FAILED")),
        finalize=finalize_awaiting_refund(rechecks=3),
    )

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    recheck = ["RefundPending", "WaitForRefund", "RecheckRefund", "RecordRefund"]
    assert result.entered_states[3:] == [
        "RecordFailed",
        *recheck,
        *recheck,
        "RefundPending",
        "ProviderFailureRecorded",
    ]
    events = state_machine.fakes.events_for(FINALIZE)
    assert [(e["outcome"], e.get("refundChecks"), e["poll"]["creditsRefunded"]) for e in events] == [
        ("FAILED", None, False), ("REFUND", 0, False), ("REFUND", 1, True),
    ]  # fmt: skip


def test_the_refund_rechecks_stop_at_their_limit_and_never_run_on_an_execution_that_hands_over(
    state_machine: StateMachineHarness,
) -> None:
    unrefunded = poll_result("FAILED") | {"creditsRefunded": False}
    install(state_machine, scripted_poll(*[unrefunded] * 3), finalize=finalize_awaiting_refund(rechecks=2))
    assert state_machine.run(execution_input()).entered_states.count("RecheckRefund") == 2

    install(state_machine, scripted_poll(unrefunded), finalize=finalize_awaiting_refund(rechecks=2))
    handing_over = execution_input("job-2") | {"handoverAfterSeconds": 120, "segmentStartedAt": 1767225000.0}
    result = state_machine.run(handing_over)
    assert result.status == "SUCCEEDED"
    assert result.entered_states[-3:] == ["RecordFailed", "RefundPending", "ProviderFailureRecorded"]


def test_deadline_exceeded_records_timed_out_and_fails_execution(state_machine: StateMachineHarness) -> None:
    late = poll_result("PENDING", deadline_exceeded=True)
    install(state_machine, scripted_poll(poll_result("PENDING"), late))

    result = state_machine.run(execution_input())

    assert result.status == "FAILED"
    assert result.error == "ImageJobs.DeadlineExceeded"
    assert result.entered_states[-2:] == ["RecordTimedOut", "JobTimedOut"]
    assert state_machine.fakes.events_for(FINALIZE) == [
        {"jobId": "job-1", "taskId": "tsk_1", "outcome": "TIMED_OUT", "poll": late, "polls": 2}
    ]


def test_completed_at_the_deadline_still_stores_outputs(state_machine: StateMachineHarness) -> None:
    install(state_machine, scripted_poll(poll_result("COMPLETED", deadline_exceeded=True)))

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    assert "StoreOutputs" in result.entered_states
    assert "RecordTimedOut" not in result.entered_states


@pytest.mark.parametrize(
    "error_type",
    [
        "ProviderTransientError",
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Sandbox.Timedout",
        "Runtime.ExitError",  # the poll's execution environment died (found by the crash suite)
        "Lambda.Unknown",
    ],
)
def test_transient_poll_error_is_retried_with_backoff(
    state_machine: StateMachineHarness, error_type: str
) -> None:
    install(state_machine, scripted_poll(LambdaError(error_type), poll_result("COMPLETED")))

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    assert len(state_machine.fakes.events_for(POLL)) == 2
    assert "RecordError" not in result.entered_states
    # One retry; FULL jitter draws the delay from [0, IntervalSeconds].
    assert len(state_machine.retry_sleeps) == 1
    assert 0 <= state_machine.retry_sleeps[0] <= 2


def test_persistent_transient_errors_end_in_recorded_pipeline_error(
    state_machine: StateMachineHarness,
) -> None:
    install(state_machine, scripted_poll(*[LambdaError("ProviderTransientError", "HTTP 503")] * 6))

    result = state_machine.run(execution_input())

    assert len(state_machine.fakes.events_for(POLL)) == 6  # first attempt + MaxAttempts 5
    assert len(state_machine.retry_sleeps) == 5
    assert all(0 <= delay <= 30 for delay in state_machine.retry_sleeps)  # MaxDelaySeconds caps backoff
    assert result.status == "FAILED"
    assert result.error == "ImageJobs.PipelineError"
    [finalized] = state_machine.fakes.events_for(FINALIZE)
    assert finalized["outcome"] == "ERROR"
    assert finalized["error"]["Error"] == "ProviderTransientError"


def test_non_transient_poll_error_goes_straight_to_record_error(state_machine: StateMachineHarness) -> None:
    install(state_machine, scripted_poll(LambdaError("TaskNotFound", "task tsk_1 not found")))

    result = state_machine.run(execution_input())

    assert result.status == "FAILED"
    assert result.error == "ImageJobs.PipelineError"
    assert result.entered_states[-4:] == ["Poll", "MarkPipelineError", "RecordError", "PipelineFailed"]
    assert state_machine.retry_sleeps == []
    [finalized] = state_machine.fakes.events_for(FINALIZE)
    assert finalized["jobId"] == "job-1"
    assert finalized["taskId"] == "tsk_1"
    assert finalized["outcome"] == "ERROR"
    assert finalized["polls"] == 0
    assert "poll" not in finalized  # the first poll failed: there is no poll summary yet
    assert finalized["error"]["Error"] == "TaskNotFound"
    assert json.loads(finalized["error"]["Cause"])["errorMessage"] == "task tsk_1 not found"


def test_store_outputs_failure_is_recorded_with_the_last_poll(state_machine: StateMachineHarness) -> None:
    def store_fails(state: dict[str, Any]) -> dict[str, Any]:
        raise LambdaError("OutputTooLarge", "output exceeds MAX_OUTPUT_BYTES")

    install(state_machine, scripted_poll(poll_result("COMPLETED")), store=store_fails)

    result = state_machine.run(execution_input())

    assert result.status == "FAILED"
    assert result.entered_states[-4:] == [
        "StoreOutputs",
        "MarkPipelineError",
        "RecordError",
        "PipelineFailed",
    ]
    [finalized] = state_machine.fakes.events_for(FINALIZE)
    assert finalized["outcome"] == "ERROR"
    assert finalized["poll"]["status"] == "COMPLETED"
    assert finalized["error"]["Error"] == "OutputTooLarge"


def test_unrecognised_poll_status_is_recorded_instead_of_looping(state_machine: StateMachineHarness) -> None:
    install(state_machine, scripted_poll({"status": "WEIRD", "deadlineExceeded": False}))

    result = state_machine.run(execution_input())

    assert result.status == "FAILED"
    assert len(state_machine.fakes.events_for(POLL)) == 1
    [finalized] = state_machine.fakes.events_for(FINALIZE)
    assert finalized["error"]["Error"] == "ImageJobs.UnexpectedPollResult"


def test_finalize_is_retried_until_the_terminal_state_is_recorded(state_machine: StateMachineHarness) -> None:
    attempts: list[dict[str, Any]] = []

    def flaky_finalize(event: dict[str, Any]) -> dict[str, Any]:
        attempts.append(event)
        if len(attempts) < 4:
            raise LambdaError("ProvisionedThroughputExceededException", "table busy")
        return finalize_ok(event)

    install(state_machine, scripted_poll(poll_result("FAILED")), finalize=flaky_finalize)

    result = state_machine.run(execution_input())

    assert result.status == "SUCCEEDED"
    assert len(attempts) == 4
    assert all(event["outcome"] == "FAILED" for event in attempts)


def test_definition_placeholders_are_exactly_the_template_substitutions() -> None:
    definition = ASL_PATH.read_text(encoding="utf-8")
    with pytest.raises(KeyError, match="FinalizeFunctionArn"):
        substitute_definition(definition, {"PollFunctionArn": "a", "StoreOutputsFunctionArn": "b"})
    with pytest.raises(KeyError, match="JobsTableName"):
        substitute_definition(definition, {key: "arn:x" for key in FUNCTION_PLACEHOLDERS})
    substitutions = {**{key: "arn:x" for key in FUNCTION_PLACEHOLDERS}, **OTHER_PLACEHOLDERS}
    substituted = json.loads(substitute_definition(definition, substitutions))
    assert "${" not in json.dumps(substituted)
