"""Static properties of statemachine/job.asl.json that executions alone do not pin down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import ASL_PATH

LAMBDA_TRANSIENT_ERRORS = {
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASL_PATH.read_text(encoding="utf-8"))
    return loaded


def _targets(state: dict[str, Any]) -> set[str]:
    targets = {state[key] for key in ("Next", "Default") if key in state}
    targets |= {choice["Next"] for choice in state.get("Choices", [])}
    targets |= {catcher["Next"] for catcher in state.get("Catch", [])}
    return targets


def test_every_state_is_reachable_and_every_target_exists(definition: dict[str, Any]) -> None:
    states = definition["States"]
    seen, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        assert name in states, f"transition to missing state {name}"
        seen.add(name)
        frontier.extend(_targets(states[name]))
    assert seen == set(states)


def test_poll_retries_transient_errors_with_jittered_capped_backoff(definition: dict[str, Any]) -> None:
    [retrier] = definition["States"]["Poll"]["Retry"]
    assert {"ProviderTransientError", *LAMBDA_TRANSIENT_ERRORS} <= set(retrier["ErrorEquals"])
    assert "States.ALL" not in retrier["ErrorEquals"]
    assert retrier["IntervalSeconds"] == 2
    assert retrier["BackoffRate"] == 2
    assert retrier["MaxAttempts"] == 5
    assert retrier["JitterStrategy"] == "FULL"
    assert 2 <= retrier["MaxDelaySeconds"] <= 60


def test_store_outputs_retries_lambda_service_errors_but_not_its_own_timeouts(
    definition: dict[str, Any],
) -> None:
    [retrier] = definition["States"]["StoreOutputs"]["Retry"]
    assert {"ProviderTransientError", *LAMBDA_TRANSIENT_ERRORS} <= set(retrier["ErrorEquals"])
    # A copy that ran out of time (15 min) would only run out again.
    assert not {"Sandbox.Timedout", "Lambda.Unknown", "States.ALL"} & set(retrier["ErrorEquals"])


def test_work_tasks_catch_everything_into_record_error(definition: dict[str, Any]) -> None:
    for name in ("Poll", "StoreOutputs"):
        [catcher] = definition["States"][name]["Catch"]
        assert catcher == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "MarkPipelineError",
        }
    assert definition["States"]["MarkPipelineError"]["Next"] == "RecordError"


def test_recording_tasks_retry_everything_generously_and_keep_the_state(definition: dict[str, Any]) -> None:
    for name in ("RecordFailed", "RecordTimedOut", "RecordError", "RecordRefund"):
        state = definition["States"][name]
        assert state["Parameters"]["FunctionName"] == "${FinalizeFunctionArn}"
        [retrier] = state["Retry"]
        assert retrier["ErrorEquals"] == ["States.ALL"]
        assert retrier["MaxAttempts"] >= 5
        # The state goes on whole; a provider failure's result adds only whether to recheck the refund.
        assert state["ResultPath"] == ("$.refund" if name in ("RecordFailed", "RecordRefund") else None)


def test_tasks_return_small_state_without_the_lambda_envelope(definition: dict[str, Any]) -> None:
    poll = definition["States"]["Poll"]
    assert poll["Resource"] == "arn:aws:states:::lambda:invoke"
    assert poll["Parameters"] == {"FunctionName": "${PollFunctionArn}", "Payload.$": "$"}
    assert poll["OutputPath"] == "$.Payload"
    store = definition["States"]["StoreOutputs"]
    assert store["ResultSelector"] == {"result.$": "$.Payload"}


def test_the_loop_waits_the_interval_given_in_the_input(definition: dict[str, Any]) -> None:
    wait = definition["States"][definition["StartAt"]]
    assert wait["Type"] == "Wait"
    assert wait["SecondsPath"] == "$.pollIntervalSeconds"
