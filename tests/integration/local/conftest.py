"""Fixtures for the local-stack machinery, exercised with a small fixture template (fixtures/)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.local import LocalStack, LocalStackConfig

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"


def fixture_config(**overrides: Any) -> LocalStackConfig:
    config = LocalStackConfig(
        template_path=FIXTURE_TEMPLATE,
        stack_name="fixture",
        start_simulator=False,
        parameter_overrides={"WaitSeconds": "1"},
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def fixture_stack() -> Iterator[LocalStack]:
    with LocalStack(fixture_config()) as stack:
        yield stack


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def get_item(stack: LocalStack, item_id: str) -> dict[str, Any] | None:
    table = stack.info.outputs["ItemsTableName"]
    item = stack.client("dynamodb").get_item(TableName=table, Key={"id": {"S": item_id}}).get("Item")
    if item is None:
        return None
    return {k: next(iter(v.values())) for k, v in item.items()}


def send(stack: LocalStack, *bodies: dict[str, Any]) -> None:
    stack.client("sqs").send_message_batch(
        QueueUrl=stack.info.outputs["ItemsQueueUrl"],
        Entries=[{"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(bodies)],
    )


def queue_depth(stack: LocalStack, output_key: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.info.outputs[output_key],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@contextmanager
def bare_moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, without the local stack; its URL. Reset when done
    (moto's backends are process-wide)."""
    import requests
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url
    finally:
        requests.post(f"{url}/moto-api/reset", timeout=10)
        server.stop()
