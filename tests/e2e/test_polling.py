"""FirstPollAfter=auto and PollsPerInvocation through the whole pipeline (docs/polling.md).

Its own in-process stack with both options on and a 1-s poll interval. The table is seeded with
COMPLETED records of one model, as earlier jobs would have left them, so that the intake's
estimate comes from the records (through the role's conditional Query grant, which the IAM audit
checks) rather than from the catalog.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imagejobs_tools.local.stack import LocalStack, LocalStackConfig
from tests.e2e.conftest import REPO, wait_for
from tests.e2e.test_handover import job_record

pytestmark = [pytest.mark.e2e]

POLLS_PER_INVOCATION = 3
MODEL = "nano-banana-2"
# The provider's generation times of 30 earlier jobs: 3.0-5.9 s, so the 10th percentile is 3.2 s.
EARLIER = [3.0 + 0.1 * index for index in range(30)]
GENERATION_SECONDS = 8.0


@pytest.fixture(scope="module")
def polling_stack() -> Iterator[LocalStack]:
    config = LocalStackConfig(
        template_path=REPO / "template.yaml",
        stack_name="imagejobs-polling",
        sim_latency=(0.0, 0.01),
        poll_interval_seconds=1,
        parameter_overrides={
            "FirstPollAfter": "auto",
            "PollsPerInvocation": str(POLLS_PER_INVOCATION),
            "LogLevel": "WARNING",
        },
        environment_overrides={"POWERTOOLS_METRICS_DISABLED": "true"},
        # Each polling job holds a PollFunction environment for most of its life.
        concurrency_overrides={"PollFunction": 4},
    )
    with LocalStack(config) as stack:
        yield stack


def test_a_concurrency_override_sizes_only_its_functions_pool(polling_stack: LocalStack) -> None:
    limits = {spec.logical_id: spec.max_concurrency for spec in polling_stack.dispatcher.functions.values()}
    assert limits["PollFunction"] == 4
    assert limits["FinalizeFunction"] == polling_stack.config.function_concurrency == 2
    assert limits["IntakeFunction"] == 5  # the SQS source's MaximumConcurrency (MaxProviderConcurrency)


def seed_completed_records(stack: LocalStack) -> None:
    table = stack.info.outputs["JobsTableName"]
    dynamodb = stack.client("dynamodb")
    for index, seconds in enumerate(EARLIER):
        dynamodb.put_item(
            TableName=table,
            Item={
                "jobId": {"S": f"earlier-{index:02d}"},
                "status": {"S": "COMPLETED"},
                "model": {"S": MODEL},
                "updatedAt": {"S": f"2026-12-01T00:00:{index:02d}.000Z"},
                "latency": {"M": {"providerSeconds": {"N": f"{seconds:.1f}"}}},
            },
        )


def poll_task_calls(history: list[dict[str, Any]]) -> int:
    return sum(
        1
        for event in history
        if event["type"] == "TaskStateEntered" and event["stateEnteredEventDetails"]["name"] == "Poll"
    )


def test_the_first_poll_waits_for_the_models_usual_time_and_each_call_polls_several_times(
    polling_stack: LocalStack,
) -> None:
    stack = polling_stack
    outputs = stack.info.outputs
    seed_completed_records(stack)
    job_id = f"e2e-polling-{uuid.uuid4().hex[:8]}"
    stack.client("sqs").send_message(
        QueueUrl=outputs["JobsQueueUrl"],
        MessageBody=json.dumps(
            {
                "jobId": job_id,
                "model": MODEL,
                "prompt": "a lighthouse at dawn, polled less often",
                "providerInput": {"simLatencySeconds": GENERATION_SECONDS},
            }
        ),
    )
    record = wait_for(
        lambda: (r := job_record(stack, job_id)) is not None and r.get("status") == "COMPLETED" and r,
        timeout=90,
        what=f"job {job_id} COMPLETED",
    )
    sfn = stack.client("stepfunctions")
    arn = record["executionArn"]
    started = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    # The 10th percentile of the seeded times (3.2 s), in whole seconds, then every second.
    assert (started["pollIntervalSeconds"], started["steadyPollIntervalSeconds"]) == (3, 1)

    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    calls = poll_task_calls(history)
    # ~5 polls from the 3rd to the 8th second, in calls of up to 3: fewer calls than polls.
    seen = f"{calls} Poll tasks for {record['polls']} polls; record {record}"
    assert record["polls"] >= 3, seen
    assert calls < record["polls"], seen
    assert calls >= record["polls"] / POLLS_PER_INVOCATION, seen
    # The provider's own generation time joins the samples the next estimate reads.
    assert float(record["latency"]["providerSeconds"]) == pytest.approx(GENERATION_SECONDS, abs=0.5)
    (output,) = record["outputs"]
    body = stack.client("s3").get_object(Bucket=output["bucket"], Key=output["key"])["Body"].read()
    assert len(body) == output["bytes"] > 0
    assert stack.simulator.admin.key_stats(stack.config.api_key)["tasksCreated"] == 1
