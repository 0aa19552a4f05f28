"""Cancel and retry through the whole pipeline (docs/control.md), driven by the `imagejobs` CLI.

Its own in-process stack with the default template parameters (no credit budget).
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imagejobs_tools.cli import main
from imagejobs_tools.local.stack import LocalStack
from tests.e2e.conftest import own_stack_config, wait_for
from tests.e2e.test_handover import job_record

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def control_stack() -> Iterator[LocalStack]:
    with LocalStack(own_stack_config("imagejobs-control", 1)) as stack:
        yield stack


def cli(stack: LocalStack, *args: str) -> list[dict[str, Any]]:
    outputs = stack.info.outputs
    target = [
        "--endpoint-url", stack.endpoint_url, "--queue-url", outputs["JobsQueueUrl"],
        "--table", outputs["JobsTableName"], "--region", stack.config.region,
    ]  # fmt: skip
    return [json.loads(line) for line in run(main, [*args, "--json", *target])]


def run(entry: Any, argv: list[str]) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        entry(argv)
    return out.getvalue().splitlines()


def send(stack: LocalStack, **job: Any) -> None:
    stack.client("sqs").send_message(QueueUrl=stack.info.outputs["JobsQueueUrl"], MessageBody=json.dumps(job))


def status_of(stack: LocalStack, job_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (r := job_record(stack, job_id)) is not None and r.get("status") == status and r,
        timeout=timeout,
        what=f"job {job_id} {status}",
    )


def test_a_running_job_is_cancelled_and_a_finished_one_left(control_stack: LocalStack) -> None:
    stack = control_stack
    batch = f"b-{uuid.uuid4().hex[:8]}"
    slow, quick = f"{batch}-slow", f"{batch}-quick"
    send(
        stack, jobId=slow, batchId=batch, batchLine=1, prompt="slow", providerInput={"simLatencySeconds": 60}
    )
    send(stack, jobId=quick, batchId=batch, batchLine=2, prompt="quick")
    status_of(stack, quick, "COMPLETED")
    running = status_of(stack, slow, "SUBMITTED")

    shown = {entry["jobId"]: entry for entry in cli(stack, "cancel", "--batch", batch)}
    assert shown[quick]["result"] == "already_finished" and shown[quick]["status"] == "COMPLETED"
    assert shown[slow]["result"] == "cancelled" and shown[slow]["creditsUsed"] == 3
    assert shown[slow]["stopped"] == [running["executionArn"]]
    sfn = stack.client("stepfunctions")
    assert sfn.describe_execution(executionArn=running["executionArn"])["status"] == "ABORTED"
    record = job_record(stack, slow)
    assert record is not None and record["status"] == "CANCELLED" and record["creditsUsed"] == 3
    # Idempotent: a second cancel says so and changes nothing.
    [again] = cli(stack, "cancel", slow)
    assert (again["result"], again["status"]) == ("already_finished", "CANCELLED")


def test_failed_jobs_of_a_batch_are_retried_once_as_new_linked_jobs(control_stack: LocalStack) -> None:
    stack = control_stack
    sim = stack.simulator.admin
    batch = f"r-{uuid.uuid4().hex[:8]}"
    original = f"{batch}-1"
    sim.set_faults(task_failure_rate=1.0)
    try:
        send(stack, jobId=original, batchId=batch, batchLine=1, prompt="retry me")
        status_of(stack, original, "FAILED")
    finally:
        sim.set_faults(task_failure_rate=0.0)

    [sent] = cli(stack, "retry", "--batch", batch, "--failed")
    assert sent == {"jobId": original, "status": "FAILED", "result": f"sent as {original}-r1"}
    retried = status_of(stack, f"{original}-r1", "COMPLETED")
    assert (retried["retryOf"], retried["batchId"], retried["prompt"]) == (original, batch, "retry me")
    assert job_record(stack, original)["retriedAs"] == f"{original}-r1"  # type: ignore[index]
    # A second run sends nothing new.
    results = {entry["jobId"]: entry["result"] for entry in cli(stack, "retry", "--batch", batch, "--failed")}
    assert results == {original: f"already retried as {original}-r1"}
