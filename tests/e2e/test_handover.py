"""A job longer than an execution may run hands over to fresh executions and still completes once.

Its own in-process stack (LocalStack), with the hand-over after 2 s instead of EXPRESS's 240 s,
so a job whose simulated generation takes a few seconds needs a chain of executions:
`<jobId>` → `<jobId>-1` → ….
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from imagejobs_tools.local.stack import LocalStack, LocalStackConfig
from tests.e2e.conftest import REPO, wait_for

pytestmark = [pytest.mark.e2e]

HANDOVER_AFTER_SECONDS = 2
# Long enough that the first execution must hand over (at 2 s) before the task can complete, even
# when a loaded machine starts the first poll seconds late (6 s was not: seen at load 7).
GENERATION_SECONDS = 10.0


@pytest.fixture(scope="module")
def handover_stack() -> Iterator[LocalStack]:
    config = LocalStackConfig(
        template_path=REPO / "template.yaml",
        stack_name="imagejobs-handover",
        sim_latency=(0.0, 0.01),
        poll_interval_seconds=1,
        parameter_overrides={
            "WorkflowType": "EXPRESS",
            "HandoverAfterSeconds": str(HANDOVER_AFTER_SECONDS),
            "LogLevel": "WARNING",
        },
        environment_overrides={"POWERTOOLS_METRICS_DISABLED": "true"},
    )
    with LocalStack(config) as stack:
        yield stack


def job_record(stack: LocalStack, job_id: str) -> dict[str, Any] | None:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.info.outputs["JobsTableName"], Key={"jobId": {"S": job_id}}, ConsistentRead=True
        )
        .get("Item")
    )
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def test_a_job_longer_than_the_handover_limit_completes_through_a_chain_of_executions(
    handover_stack: LocalStack,
) -> None:
    stack = handover_stack
    outputs = stack.info.outputs
    sfn = stack.client("stepfunctions")
    assert sfn.describe_state_machine(stateMachineArn=outputs["StateMachineArn"])["type"] == "EXPRESS"
    job_id = f"e2e-handover-{uuid.uuid4().hex[:8]}"
    stack.client("sqs").send_message(
        QueueUrl=outputs["JobsQueueUrl"],
        MessageBody=json.dumps(
            {
                "jobId": job_id,
                "prompt": "a slow lighthouse at dawn",
                "aspectRatio": "1:1",
                "providerInput": {"simLatencySeconds": GENERATION_SECONDS},
            }
        ),
    )

    def finished_chain() -> list[dict[str, Any]] | None:
        record = job_record(stack, job_id)
        if record is None or record.get("status") not in {"COMPLETED", "FAILED", "TIMED_OUT"}:
            return None
        executions = sfn.list_executions(stateMachineArn=outputs["StateMachineArn"])["executions"]
        if any(e["status"] == "RUNNING" for e in executions):
            return None
        return executions

    executions = wait_for(finished_chain, timeout=90, what=f"job {job_id} and its executions to finish")
    record = job_record(stack, job_id)
    assert record is not None
    assert record["status"] == "COMPLETED", record

    # Outputs stored once, by the last execution.
    (output,) = record["outputs"]
    body = stack.client("s3").get_object(Bucket=output["bucket"], Key=output["key"])["Body"].read()
    assert len(body) == output["bytes"] > 0

    # Exactly one provider task (one charge), whatever the number of executions.
    tasks = stack.simulator.admin.tasks()
    assert len(tasks) == 1, tasks
    assert tasks[0]["taskId"] == record["taskId"]
    assert stack.simulator.admin.key_stats(stack.config.api_key)["tasksCreated"] == 1

    # The chain: <jobId>, <jobId>-1, …, all succeeded, each naming the one before it.
    names = sorted((e["name"] for e in executions), key=lambda n: (len(n), n))
    assert len(names) >= 2, names
    assert names == [job_id] + [f"{job_id}-{n}" for n in range(1, len(names))]
    assert {e["status"] for e in executions} == {"SUCCEEDED"}
    arns = {e["name"]: e["executionArn"] for e in executions}
    for previous, current in itertools.pairwise(names):
        described = sfn.describe_execution(executionArn=arns[current])
        carried = json.loads(described["input"])
        assert carried["previousExecution"] == arns[previous]
        assert carried["jobId"] == job_id and carried["taskId"] == record["taskId"]

    # The record names the first execution and the whole chain (ClaimHandOver, a DynamoDB task);
    # the poll count carries over the whole chain.
    assert record["executionArn"] == arns[job_id]
    assert record["executions"] == names
    assert record["handovers"] == len(names) - 1
    last = json.loads(sfn.describe_execution(executionArn=arns[names[-1]])["output"])
    assert last["handovers"] == len(names) - 1
    assert record["polls"] == last["polls"] >= len(names)
