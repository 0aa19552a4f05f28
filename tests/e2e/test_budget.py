"""The daily credit budget through the whole pipeline (docs/control.md).

Its own in-process stack with CreditBudgetPerDay = 6 (two gpt-image-2 jobs at 3 credits) and a
1-s recheck: the third job waits without reaching the provider, its record says why, and it runs
once the budget is raised (the function's environment updated, as a deploy would). A failed job's
refund comes back to the budget: the day's spend equals what the provider charged, net; so does a
refund that the provider shows only seconds after the failure (RefundRecheckDelays 1,2,2).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from imagejobs_tools.jobcli.client import JobsClient
from imagejobs_tools.local.stack import LocalStack
from tests.e2e.conftest import own_stack_config, wait_for
from tests.e2e.test_handover import job_record

pytestmark = [pytest.mark.e2e]

CREDITS = 3  # gpt-image-2, the catalog's price and the simulator's


@pytest.fixture(scope="module")
def budget_stack() -> Iterator[LocalStack]:
    config = own_stack_config(
        "imagejobs-budget",
        0,
        CreditBudgetPerDay=str(2 * CREDITS),
        BudgetRecheckSeconds="1",
        RefundRecheckDelays="1,2,2",
    )
    with LocalStack(config) as stack:
        yield stack


def send(stack: LocalStack, job_id: str, **fields: Any) -> None:
    stack.client("sqs").send_message(
        QueueUrl=stack.info.outputs["JobsQueueUrl"],
        MessageBody=json.dumps({"jobId": job_id, "prompt": "a lighthouse, on a budget", **fields}),
    )


def jobs_client(stack: LocalStack) -> JobsClient:
    dynamodb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.endpoint_url,
        region_name=stack.config.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return JobsClient(None, dynamodb.Table(stack.info.outputs["JobsTableName"]), None, stack.info.outputs)


def status_of(stack: LocalStack, job_id: str, status: str) -> dict[str, Any]:
    return wait_for(
        lambda: (r := job_record(stack, job_id)) is not None and r.get("status") == status and r,
        timeout=60,
        what=f"job {job_id} {status}",
    )


def test_jobs_over_the_budget_wait_and_run_once_it_is_raised(budget_stack: LocalStack) -> None:
    stack = budget_stack
    outputs = stack.info.outputs
    assert outputs["CreditBudgetPerDay"] == str(2 * CREDITS)
    client = jobs_client(stack)
    run = uuid.uuid4().hex[:8]
    jobs = [f"e2e-budget-{run}-{n}" for n in range(3)]
    for job_id in jobs[:2]:
        send(stack, job_id)
    for job_id in jobs[:2]:
        status_of(stack, job_id, "COMPLETED")
    send(stack, jobs[2])  # after the first two: which jobs get the budget is otherwise a race
    waiting = wait_for(
        lambda: (r := job_record(stack, jobs[2])) is not None and r.get("budgetWait") and r,
        timeout=30,
        what="the third job waiting for budget",
    )
    assert waiting["status"] == "RECEIVED" and "submitAttempts" in waiting
    assert "6-credit budget" in waiting["budgetWait"]["reason"]
    # It is checked again every second, and still never reaches the provider.
    first_wait = waiting["budgetWait"]["at"]
    wait_for(
        lambda: (r := job_record(stack, jobs[2])) and r["budgetWait"]["at"] != first_wait,
        timeout=30,
        what="a second budget check",
    )
    sim = stack.simulator.admin
    assert sim.key_stats(stack.config.api_key)["tasksCreated"] == 2
    # Told once for the day, through the change stream: its claims' transactions were cancelled
    # (over budget), which on moto as released cut the stream off (moto_fixes.py).
    seen: list[dict[str, Any]] = []

    def events() -> list[dict[str, Any]]:
        seen.extend(stack.events.drain())
        return seen

    def budget_waits() -> list[dict[str, Any]]:
        return [
            e
            for e in events()
            if e["detail-type"] == "Job Waiting For Budget" and e["detail"]["jobId"] == jobs[2]
        ]

    [told] = wait_for(budget_waits, timeout=30, what="the Job Waiting For Budget event")
    assert told["detail"]["budgetWait"]["day"] == waiting["budgetWait"]["day"]
    today = str(waiting["budgetWait"]["day"])
    assert client.budget_day(today, 2 * CREDITS).to_dict() == {
        "day": today, "limit": 6, "spent": 6, "reserved": 0, "committed": 6, "available": 0,
    }  # fmt: skip

    # Raised (a deploy of a new CreditBudgetPerDay): the waiting job goes on by itself.
    stack.update_function_environment("IntakeFunction", {"CREDIT_BUDGET_PER_DAY": str(4 * CREDITS)})
    done = status_of(stack, jobs[2], "COMPLETED")
    assert "budgetWait" not in done and done["budget"]["state"] == "settled"
    # Its state changes flowed after the waits; still one wait event for the day.
    wait_for(
        lambda: any(e["detail"].get("eventId") == f"{jobs[2]}/COMPLETED" for e in events()),
        timeout=30,
        what="the waiting job's COMPLETED event",
    )
    assert len(budget_waits()) == 1

    # A failed task's refund returns to the budget.
    sim.set_faults(task_failure_rate=1.0)
    try:
        failing = f"e2e-budget-{run}-failed"
        send(stack, failing)
        status_of(stack, failing, "FAILED")
    finally:
        sim.set_faults(task_failure_rate=0.0)
    # Returned by the finalize step just after it records FAILED.
    failed = wait_for(
        lambda: (r := job_record(stack, failing)) and "refunded" in r["budget"] and r,
        timeout=30,
        what="the refund returned",
    )
    assert failed["creditsRefunded"] == failed["budget"]["refunded"] == CREDITS
    spent = client.budget_day(today, 4 * CREDITS)
    assert (spent.spent, spent.reserved) == (3 * CREDITS, 0)
    assert spent.spent == sim.key_stats(stack.config.api_key)["net"]


def test_a_refund_that_lags_the_failure_lands_on_the_record_and_the_budget(budget_stack: LocalStack) -> None:
    stack = budget_stack
    stack.update_function_environment("IntakeFunction", {"CREDIT_BUDGET_PER_DAY": str(100 * CREDITS)})
    client = jobs_client(stack)
    job_id = f"e2e-budget-{uuid.uuid4().hex[:8]}-late-refund"
    # The provider shows the refund 2 s after the failure: not on the FAILED snapshot.
    send(stack, job_id, providerInput={"simFailCode": "STORAGE_ERROR", "simRefundDelaySeconds": 2})
    status_of(stack, job_id, "FAILED")
    refunded = wait_for(
        lambda: (r := job_record(stack, job_id)) and r.get("creditsRefunded") and r,
        timeout=60,
        what="the late refund recorded",
    )
    assert refunded["creditsRefunded"] == refunded["budget"]["refunded"] == CREDITS
    assert refunded["status"] == "FAILED" and refunded["error"]["code"] == "STORAGE_ERROR"
    # It came by the rechecks: the execution read the failed task again.
    history = stack.client("stepfunctions").get_execution_history(
        executionArn=refunded["executionArn"], maxResults=1000
    )["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert "RecheckRefund" in entered and entered.count("RecordRefund") >= 1
    day = client.budget_day(str(refunded["budget"]["day"]), 100 * CREDITS)
    assert day.reserved == 0
    assert day.spent == stack.simulator.admin.key_stats(stack.config.api_key)["net"]
