"""Smoke test of the local stack's moto fixes: moto's private API moves between releases."""

from __future__ import annotations

import threading
import time
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


def _delete_while_another_delete_and_a_send_run(backend: Any, queue: str) -> list[str]:
    """Delete "m0" and pause it mid-rebuild of the message list; meanwhile delete "m1" and send "m3"
    (another server thread each); the bodies the queue holds afterwards."""
    from moto.sqs.models import Message

    for body in ("m0", "m1", "m2"):
        backend.send_message(queue, body)
    handles = {m.body: m.receipt_handle for m in backend.receive_message(queue, 2, 0, 30)}
    assert set(handles) == {"m0", "m1"}

    first_delete = threading.Event()
    paused, resume, others_done = threading.Event(), threading.Event(), threading.Event()
    own_check = Message.had_receipt_handle

    def had_receipt_handle(message: Any, receipt_handle: str) -> bool:
        if first_delete.is_set() and threading.current_thread().name == "delete-m0" and message.body == "m2":
            paused.set()  # mid-rebuild: m0 left out, m1 copied, m2 next
            resume.wait(5)
        return bool(own_check(message, receipt_handle))

    def delete_m0() -> None:
        first_delete.set()
        backend.delete_message(queue, handles["m0"])

    def delete_m1_and_send_m3() -> None:
        backend.delete_message(queue, handles["m1"])
        backend.send_message(queue, "m3")
        others_done.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Message, "had_receipt_handle", had_receipt_handle)
        first = threading.Thread(target=delete_m0, name="delete-m0")
        first.start()
        assert paused.wait(5)
        others = threading.Thread(target=delete_m1_and_send_m3)
        others.start()
        others_done.wait(1)  # at once on moto as released; with the fix, after the first delete
        resume.set()
        first.join(5)
        others.join(5)
    return sorted(m.body for m in backend.get_queue(queue)._messages)


def test_moto_as_released_loses_a_message_sent_while_two_deletes_run_and_the_fix_keeps_it() -> None:
    from moto.sqs.models import Queue, SQSBackend

    released = SQSBackend("us-east-1", "123456789012")
    released.create_queue("released")
    # m3 is gone for good (never delivered, not in a DLQ), and the deleted m1 is back.
    assert _delete_while_another_delete_and_a_send_run(released, "released") == ["m1", "m2"]

    original = Queue.__dict__["delete_message"], SQSBackend.__dict__["receive_message"]
    undo = moto_fixes.install()
    try:
        fixed = SQSBackend("us-east-1", "123456789012")
        fixed.create_queue("fixed")
        assert _delete_while_another_delete_and_a_send_run(fixed, "fixed") == ["m2", "m3"]
    finally:
        undo()
    assert (Queue.__dict__["delete_message"], SQSBackend.__dict__["receive_message"]) == original


def test_a_long_polling_receive_under_the_queue_lock_still_lets_a_send_in() -> None:
    from moto.sqs.models import SQSBackend

    undo = moto_fixes.install()
    try:
        backend = SQSBackend("us-east-1", "123456789012")
        backend.create_queue("waiting")
        received: list[str] = []
        receiver = threading.Thread(
            target=lambda: received.extend(m.body for m in backend.receive_message("waiting", 1, 5, 30))
        )
        receiver.start()
        time.sleep(0.2)  # the receive is waiting (its queue's lock released inside the wait)
        sender = threading.Thread(target=backend.send_message, args=("waiting", "late"))
        sender.start()
        sender.join(2)
        receiver.join(6)
        assert not sender.is_alive()
        assert received == ["late"]
    finally:
        undo()
