"""Smoke test of the local stack's moto fixes: moto's private API moves between releases."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
    StateTaskServiceSfn,
)

from imagejobs_tools.local import moto_fixes


def start_execution_task() -> Any:
    """The Task state's service object for `arn:aws:states:::states:startExecution`, without an ASL."""
    task = StateTaskServiceSfn.__new__(StateTaskServiceSfn)
    task.resource = SimpleNamespace(api_name="states", api_action="startExecution")
    return task


def asl_parameters() -> dict[str, Any]:
    return {
        "StateMachineArn": "arn:aws:states:us-east-1:1:stateMachine:m",
        "Name": "job-1",
        "Input": {"a": 1},
    }


def test_the_patched_moto_api_is_where_the_fix_expects_it() -> None:
    moto_fixes.check()
    assert StateTaskServiceSfn.__name__ == moto_fixes.SFN_SERVICE_CLASS


def test_install_renames_start_execution_parameters_and_undo_restores_moto() -> None:
    before = StateTaskServiceSfn.__dict__[moto_fixes.PATCHED_METHOD]
    undo = moto_fixes.install()
    try:
        parameters = asl_parameters()
        start_execution_task()._normalise_parameters(parameters)
        # botocore's names; Input serialised by moto's own normalisation, which still runs first.
        assert parameters == {
            "stateMachineArn": "arn:aws:states:us-east-1:1:stateMachine:m",
            "name": "job-1",
            "input": '{"a":1}',
        }
        # A second install does not wrap twice; its undo leaves the first one in place.
        patched = StateTaskServiceSfn.__dict__[moto_fixes.PATCHED_METHOD]
        moto_fixes.install()()
        assert StateTaskServiceSfn.__dict__[moto_fixes.PATCHED_METHOD] is patched
    finally:
        undo()
    assert StateTaskServiceSfn.__dict__[moto_fixes.PATCHED_METHOD] is before
    unpatched = asl_parameters()
    start_execution_task()._normalise_parameters(unpatched)
    assert "StateMachineArn" in unpatched  # moto's own behaviour is back


def test_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_fixes, "PATCHED_METHOD", "_gone_in_a_later_moto")
    with pytest.raises(moto_fixes.MotoFixError, match="_gone_in_a_later_moto"):
        moto_fixes.check()


def test_camel_case_parameters_only_touches_top_level_pascal_case_keys() -> None:
    parameters: dict[str, Any] = {"Name": "n", "traceHeader": "t", "Input": {"Nested": 1}}
    moto_fixes.camel_case_parameters(parameters)
    assert parameters == {"name": "n", "traceHeader": "t", "input": {"Nested": 1}}


def test_sqs_pending_message_groups_survives_the_set_changing_under_it_and_undo_restores_moto() -> None:
    from moto.sqs.models import Queue

    original = Queue.__dict__["pending_message_groups"]
    queue = Queue.__new__(Queue)

    class Message:
        """Reading group_id lets "another thread" put a message in flight, mid-iteration."""

        def __init__(self, group: str | None) -> None:
            self.group = group

        @property
        def group_id(self) -> str | None:
            queue._pending_messages.add(Message(None))
            return self.group

    def in_flight() -> set[Message]:
        return {Message("a"), Message("b"), Message(None)}

    queue._pending_messages = in_flight()
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        _ = queue.pending_message_groups  # moto as released

    undo = moto_fixes.install()
    try:
        queue._pending_messages = in_flight()
        assert queue.pending_message_groups == {"a", "b"}
    finally:
        undo()
    assert Queue.__dict__["pending_message_groups"] is original


def _failure_of(error: Exception) -> Any:
    task = start_execution_task()
    task.resource.service_name = "states"
    task.resource.condition = None
    env = SimpleNamespace(
        next_state_name="HandOver", event_history_context=SimpleNamespace(source_event_id=1)
    )
    return task._from_error(env, error)


def test_a_start_execution_without_response_is_a_task_failure_retry_and_catch_can_match() -> None:
    from botocore.exceptions import ConnectionClosedError

    reset = ConnectionClosedError(endpoint_url="http://127.0.0.1:1/")
    # moto as released: States.Runtime, which no Retry/Catch matches (the execution just fails).
    assert _failure_of(reset).error_name.error_name == "States.Runtime"
    undo = moto_fixes.install()
    try:
        failure = _failure_of(reset)
        assert failure.error_name.error_name == moto_fixes.SFN_CLIENT_ERROR
        assert failure.event_details["taskFailedEventDetails"]["resource"] == "startExecution"
    finally:
        undo()
    assert _failure_of(reset).error_name.error_name == "States.Runtime"


EVENT_BUS_TEMPLATE = {
    "Resources": {
        "Bus": {"Type": "AWS::Events::EventBus", "Properties": {"Name": "imagejobs-events"}},
    },
    "Outputs": {"BusRef": {"Value": {"Ref": "Bus"}}},
}


def bus_ref_output() -> str:
    """`Ref` of an AWS::Events::EventBus as moto's CloudFormation resolves it (AWS: the bus's name)."""
    import json

    import boto3
    from moto import mock_aws

    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="bus", TemplateBody=json.dumps(EVENT_BUS_TEMPLATE))
        [stack] = cloudformation.describe_stacks(StackName="bus")["Stacks"]
        return str({o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["BusRef"])


def test_an_event_bus_ref_is_its_name_with_the_fix_and_was_not_without() -> None:
    assert bus_ref_output() != "imagejobs-events"  # moto as released: the model object's repr
    undo = moto_fixes.install()
    try:
        assert bus_ref_output() == "imagejobs-events"
    finally:
        undo()
    assert bus_ref_output() != "imagejobs-events"
