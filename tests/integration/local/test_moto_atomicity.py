"""Check-then-act races in moto that AWS does not have; the local stack's fixes (moto_fixes.py).

DynamoDB: eight intake invocations, each with its own client, claim one RECEIVED job at the same
instant (`JobStore.claim_for_submit`, the exact UpdateItem intake sends before it submits to the
provider). On AWS exactly one wins. On moto as released, more than one wins in about one round in ten.

Step Functions: eight StartExecution calls with one name (a job's loop is named after the job). On AWS
one execution exists; moto as released can create several.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from imagejobs.store import JobStore
from moto.dynamodb.responses import DynamoHandler
from moto.stepfunctions.parser import models as sfn_models
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from imagejobs_tools.local import moto_fixes
from imagejobs_tools.local.template import jobs_table_definition
from tests.integration.local.conftest import bare_moto_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CONTENDERS = 8
TABLE = "jobs"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with bare_moto_server() as url:
        client(url).create_table(TableName=TABLE, **jobs_table_definition())
        requests.post(
            f"{url}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}, timeout=5
        )
        yield url
        # moto's config is process-wide: leave it as other tests in this worker expect it.
        requests.post(
            f"{url}/moto-api/config", json={"stepfunctions": {"execute_state_machine": False}}, timeout=5
        )


# Explicit: the module-scoped server starts before the per-test fake-credentials fixture.
LOCAL: dict[str, Any] = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def execute_state_machines(url: str, execute: bool) -> None:
    config = {"stepfunctions": {"execute_state_machine": execute}}
    requests.post(f"{url}/moto-api/config", json=config, timeout=5).raise_for_status()


def client(url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, **LOCAL)


def store(url: str) -> JobStore:
    return JobStore(boto3.resource("dynamodb", endpoint_url=url, **LOCAL).Table(TABLE))


def claim_round(stores: list[JobStore], job_id: str) -> int:
    """Put one RECEIVED job, let every store claim it at a barrier; how many claims succeeded."""
    stores[0].table.put_item(Item={"jobId": job_id, "status": "RECEIVED", "statusHistory": []})
    barrier = threading.Barrier(len(stores))
    winners: list[str] = []

    def claim(contender: JobStore) -> None:
        barrier.wait()
        if contender.claim_for_submit(job_id, lease_seconds=60).applied:
            winners.append(job_id)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(winners)


def unpatched() -> bool:
    return not getattr(DynamoHandler.__dict__["update_item"], moto_fixes._MARKER, False)


def test_moto_as_released_lets_several_conditional_claims_of_one_job_win(endpoint: str) -> None:
    assert unpatched(), "another test left the moto fixes installed"
    stores = [store(endpoint) for _ in range(CONTENDERS)]
    rounds_with_several_winners = 0
    rounds = 0
    # Stops as soon as the race has shown three times (usually within ~30 rounds).
    while rounds < 600 and rounds_with_several_winners < 3:
        rounds += 1
        if claim_round(stores, f"released-{rounds}") > 1:
            rounds_with_several_winners += 1
    # If this fails, moto made conditional writes atomic: the fix can go (moto_fixes.py).
    assert rounds_with_several_winners == 3, f"{rounds_with_several_winners} in {rounds} rounds"


def test_with_the_fix_exactly_one_claim_wins_every_round_and_undo_restores_moto(endpoint: str) -> None:
    original = DynamoHandler.__dict__["update_item"]
    undo = moto_fixes.install()
    try:
        stores = [store(endpoint) for _ in range(CONTENDERS)]
        winners = [claim_round(stores, f"fixed-{n}") for n in range(100)]
        assert winners == [1] * 100
        # The losers see the claim: the item is SUBMITTING, claimed once.
        record = stores[0].get("fixed-99")
        assert record is not None
        assert record["status"] == "SUBMITTING"
        assert record["submitAttempts"] == 1
    finally:
        undo()
    assert DynamoHandler.__dict__["update_item"] is original
    assert unpatched()


def test_the_lock_covers_every_item_operation_and_a_second_install_does_not_wrap_twice() -> None:
    undo = moto_fixes.install()
    try:
        for name in moto_fixes.DYNAMODB_ITEM_OPERATIONS:
            assert getattr(DynamoHandler.__dict__[name], moto_fixes._MARKER, False), name
        assert getattr(StepFunctionsParserBackend.__dict__["start_execution"], moto_fixes._MARKER, False)
        patched = DynamoHandler.__dict__["put_item"]
        moto_fixes.install()()
        assert DynamoHandler.__dict__["put_item"] is patched
    finally:
        undo()


def test_check_names_the_dynamodb_operation_that_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_fixes, "DYNAMODB_ITEM_OPERATIONS", ("update_item", "gone_in_a_later_moto"))
    with pytest.raises(moto_fixes.MotoFixError, match="gone_in_a_later_moto"):
        moto_fixes.check()


class SlowExecution(sfn_models.Execution):
    """moto's Execution, built 50 ms slower: widens the gap between StartExecution's name check and
    the moment it files the new execution, so that the race shows in every round, not 1 in 200."""

    created: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)
        super().__init__(*args, **kwargs)
        SlowExecution.created.append(str(kwargs.get("name")))


def start_round(url: str, machine_arn: str, name: str) -> tuple[int, set[str]]:
    """Eight concurrent starts of one name and input: (executions created, ARNs returned)."""
    clients = [boto3.client("stepfunctions", endpoint_url=url, **LOCAL) for _ in range(CONTENDERS)]
    barrier = threading.Barrier(CONTENDERS)
    arns: list[str] = []

    def start(sfn: Any) -> None:
        barrier.wait()
        arns.append(sfn.start_execution(stateMachineArn=machine_arn, name=name, input="{}")["executionArn"])

    threads = [threading.Thread(target=start, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return SlowExecution.created.count(name), set(arns)


@pytest.fixture
def waiting_machine(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sfn_models, "Execution", SlowExecution)
    sfn = boto3.client("stepfunctions", endpoint_url=endpoint, **LOCAL)
    definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": True}}}
    name = f"machine-{time.monotonic_ns()}"
    role = "arn:aws:iam::123456789012:role/states"
    return str(
        sfn.create_state_machine(name=name, roleArn=role, definition=json.dumps(definition))[
            "stateMachineArn"
        ]
    )


def test_moto_as_released_can_start_two_executions_with_one_name(endpoint: str, waiting_machine: str) -> None:
    assert not getattr(StepFunctionsParserBackend.__dict__["start_execution"], moto_fixes._MARKER, False)
    created = [start_round(endpoint, waiting_machine, f"released-{n}")[0] for n in range(3)]
    # If this fails, moto made the name check atomic: the fix can go (moto_fixes.py).
    assert all(count > 1 for count in created), created


def test_with_the_fix_one_name_starts_one_execution(endpoint: str, waiting_machine: str) -> None:
    original = StepFunctionsParserBackend.__dict__["start_execution"]
    undo = moto_fixes.install()
    try:
        for n in range(3):
            created, arns = start_round(endpoint, waiting_machine, f"fixed-{n}")
            # One execution; the other seven calls are StartExecution's idempotent answer (same input).
            assert (created, len(arns)) == (1, 1)
    finally:
        undo()
    assert StepFunctionsParserBackend.__dict__["start_execution"] is original
