"""The local stack's server tuning (applied on start, undone on stop) and its observation hooks."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
import requests

from imagejobs_tools.local import LocalStack
from imagejobs_tools.local.dispatch import InvocationRecord
from imagejobs_tools.local.observe import AwsCallCounts, count_aws_calls
from tests.integration.local.conftest import fixture_config

pytestmark = [pytest.mark.integration]


def test_server_tuning_is_applied_while_running_and_undone_on_stop() -> None:
    from moto import backends
    from moto.moto_server import threaded_moto_server

    original_listing = backends.list_of_moto_modules
    original_handler = threaded_moto_server.MotoRequestHandler
    interpreter_log = logging.getLogger("moto.stepfunctions.parser")
    original_level = interpreter_log.level

    stack = LocalStack(fixture_config())
    stack.start()
    try:
        assert backends.list_of_moto_modules is not original_listing
        assert set(backends.list_of_moto_modules()) == set(original_listing())
        assert interpreter_log.level == logging.CRITICAL
        assert threaded_moto_server.MotoRequestHandler is not original_handler
        # Keep-alive: one TCP connection serves several requests, whatever their bodies: read by
        # the app, ignored by it (GET with a body), chunked (moto's config endpoint wants a
        # Content-Length, so that one is a 500). A body left in the socket would be parsed as the
        # next request line, so each request's successor must still get a well-formed answer.
        url = f"{stack.info.endpoint_url}/moto-api/config"
        body = {"stepfunctions": {"execute_state_machine": True}}
        chunked = iter([b'{"stepfunctions": ', json.dumps(body["stepfunctions"]).encode(), b"}"])
        calls = [
            ("POST", {"json": body}, True),
            ("GET", {"data": "x" * 20_000}, True),
            ("POST", {"data": chunked}, False),
            ("GET", {}, True),
        ]
        with requests.Session() as session:
            peers = set()
            for method, kwargs, well_formed in calls:
                response = session.request(method, url, timeout=10, stream=True, **kwargs)
                assert response.headers.get("Connection", "").lower() != "close"
                peers.add(response.raw.connection.sock.getsockname())
                if well_formed:
                    assert response.ok, (method, response.text)
                    assert "lambda" in response.json(), (method, response.text)
                else:
                    response.content  # noqa: B018 (read it, so the connection returns to the pool)
            assert len(peers) == 1
        # A client that asks to close gets its connection closed.
        closing = requests.get(
            f"{stack.info.endpoint_url}/moto-api/config", headers={"Connection": "close"}, timeout=10
        )
        assert closing.headers.get("Connection", "").lower() == "close"
    finally:
        stack.stop()

    assert backends.list_of_moto_modules is original_listing
    assert threaded_moto_server.MotoRequestHandler is original_handler
    assert interpreter_log.level == original_level


@pytest.fixture(scope="module")
def stack() -> object:
    with LocalStack(fixture_config()) as running:
        yield running


def test_observer_sees_every_invocation_until_removed(stack: LocalStack) -> None:
    seen: list[InvocationRecord] = []
    lock = threading.Lock()

    def observe(record: InvocationRecord) -> None:
        with lock:
            seen.append(record)

    task = stack.info.functions["TaskFunction"]
    lambda_client = stack.client("lambda")
    item_id = f"observed-{uuid.uuid4().hex[:8]}"
    remove = stack.dispatcher.add_observer(observe)
    try:
        lambda_client.invoke(FunctionName=task, Payload=json.dumps({"id": item_id, "wait": 0}).encode())
        lambda_client.invoke(FunctionName=task, Payload=json.dumps({"id": "x", "taskError": "boom"}).encode())
    finally:
        remove()
    lambda_client.invoke(FunctionName=task, Payload=json.dumps({"id": "after", "wait": 0}).encode())

    mine = [r for r in seen if r.function_name == task]
    assert [r.event.get("id") for r in mine] == [item_id, "x"]
    assert [r.errored for r in mine] == [False, True]
    assert all(r.logical_id == "TaskFunction" and r.seconds >= 0 for r in mine)


def test_a_failing_observer_does_not_change_the_result(stack: LocalStack) -> None:
    def broken(record: InvocationRecord) -> None:
        raise RuntimeError("observer bug")

    remove = stack.dispatcher.add_observer(broken)
    try:
        response = stack.client("lambda").invoke(
            FunctionName=stack.info.functions["TaskFunction"],
            Payload=json.dumps({"id": "still-ok", "wait": 0}).encode(),
        )
    finally:
        remove()
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read())["done"] is True


def test_aws_calls_the_stack_makes_are_counted_by_operation_and_the_callers_are_not(
    stack: LocalStack,
) -> None:
    sqs = stack.client("sqs")
    counts = AwsCallCounts()
    with count_aws_calls(stack, counts):
        sqs.get_queue_attributes(QueueUrl=stack.info.outputs["ItemsQueueUrl"], AttributeNames=["All"])
        stack.client("dynamodb").list_tables()
        time.sleep(1.5)  # the pollers long-poll for 1 s
    sqs.list_queues()

    assert counts.counts["sqs.ReceiveMessage"] >= 1  # the pollers', with their functions' roles
    assert counts.counts["sqs.GetQueueAttributes"] == 0  # the caller's own (the "testing" key)
    assert counts.counts["dynamodb.ListTables"] == 0
    assert counts.counts["sqs.ListQueues"] == 0
