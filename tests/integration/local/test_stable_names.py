"""Physical resource names stay the same across restarts on one --port (moto's random source seeded)."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from imagejobs_tools.local import LocalStack
from tests.integration.local.conftest import fixture_config

pytestmark = [pytest.mark.integration]

# Types whose physical names moto's CloudFormation makes up (stack name, logical id, random suffix).
GENERATED_NAME_TYPES = {"AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::Lambda::Function"}


@dataclass
class Run:
    resources: dict[str, str]
    types: dict[str, str]
    outputs: dict[str, str]
    message_id: str


def run_on(port: int) -> Run:
    with LocalStack(fixture_config(port=port)) as stack:
        # The dead-letter queue has no poller: the message just sits there.
        sent = stack.client("sqs").send_message(
            QueueUrl=stack.info.queues["ItemsDeadLetterQueue"], MessageBody="x"
        )
        return Run(stack.info.resources, stack.info.resource_types, stack.info.outputs, sent["MessageId"])


def two_free_ports() -> tuple[int, int]:
    with ExitStack() as sockets:
        probes = [sockets.enter_context(socket.socket()) for _ in range(2)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        first, second = (probe.getsockname()[1] for probe in probes)
    return first, second


def test_the_same_port_gives_the_same_names_and_another_port_other_names() -> None:
    port, other_port = two_free_ports()
    first = run_on(port)
    again = run_on(port)
    assert again.resources == first.resources
    assert again.outputs == first.outputs
    # Only the names are fixed: later ids (an SQS message id is a job's default id) stay random.
    assert again.message_id != first.message_id

    other = run_on(other_port)
    generated = [lid for lid, kind in first.types.items() if kind in GENERATED_NAME_TYPES]
    assert len(generated) >= 5
    assert all(other.resources[lid] != first.resources[lid] for lid in generated)
