"""The AWS fault layer (imagejobs_tools.local.aws_faults) against a bare moto server: each service's
real throttling error as botocore parses it, a reset after the work was done, rules changed at run
time, the observer key left alone, and the Step Functions engine's in-process Lambda tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from imagejobs_tools.local.aws_faults import (
    OBSERVER_ACCESS_KEY,
    RESET,
    SERVER_ERROR,
    THROTTLE,
    AwsFaults,
    FaultRule,
)

from .conftest import bare_moto_server


@pytest.fixture()
def faulty_server() -> Iterator[tuple[str, AwsFaults]]:
    faults = AwsFaults(seed=7)
    undo = faults.install()
    try:
        with bare_moto_server() as url:
            yield url, faults
    finally:
        undo()


def _client(url: str, service: str, key: str = "AKIAFUNCTION") -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _table(url: str) -> Any:
    ddb = _client(url, "dynamodb", OBSERVER_ACCESS_KEY)
    ddb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
    )
    return ddb


@pytest.mark.parametrize(
    ("service", "call", "code", "status"),
    [
        (
            "dynamodb",
            lambda c: c.get_item(TableName="t", Key={"k": {"S": "a"}}),
            "ProvisionedThroughputExceededException",
            400,
        ),
        ("dynamodb", lambda c: c.describe_table(TableName="t"), "ThrottlingException", 400),
        ("s3", lambda c: c.list_objects_v2(Bucket="b"), "SlowDown", 503),
        ("sqs", lambda c: c.list_queues(), "RequestThrottled", 400),
        ("secretsmanager", lambda c: c.list_secrets(), "ThrottlingException", 400),
        ("stepfunctions", lambda c: c.list_state_machines(), "ThrottlingException", 400),
    ],
)
def test_throttling_carries_each_services_own_error(
    faulty_server: tuple[str, AwsFaults], service: str, call: Any, code: str, status: int
) -> None:
    url, faults = faulty_server
    _table(url)
    faults.set_rules([FaultRule(throttle=1.0)])
    with pytest.raises(ClientError) as raised:
        call(_client(url, service))
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_server_errors_are_5xx_and_botocore_retries_them(faulty_server: tuple[str, AwsFaults]) -> None:
    url, faults = faulty_server
    _table(url)
    faults.set_rules([FaultRule("dynamodb", "GetItem", server_error=1.0)])
    with pytest.raises(ClientError) as raised:
        _client(url, "dynamodb").get_item(TableName="t", Key={"k": {"S": "a"}})
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert faults.injected() == {"dynamodb.GetItem": {SERVER_ERROR: 1}}


def test_a_reset_happens_after_the_write_so_a_retried_condition_fails(
    faulty_server: tuple[str, AwsFaults],
) -> None:
    url, faults = faulty_server
    ddb = _table(url)
    ddb.put_item(TableName="t", Item={"k": {"S": "a"}, "status": {"S": "NEW"}})
    faults.set_rules([FaultRule("dynamodb", "UpdateItem", reset_after_send=1.0)])
    claim = {
        "TableName": "t",
        "Key": {"k": {"S": "a"}},
        "UpdateExpression": "SET #s = :to",
        "ConditionExpression": "#s = :from",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":to": {"S": "CLAIMED"}, ":from": {"S": "NEW"}},
    }
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, ConnectionError)):
        _client(url, "dynamodb").update_item(**claim)
    assert ddb.get_item(TableName="t", Key={"k": {"S": "a"}})["Item"]["status"] == {"S": "CLAIMED"}
    faults.set_rules([])  # at run time: the same call now reaches moto, whose condition fails
    with pytest.raises(ClientError) as raised:
        _client(url, "dynamodb").update_item(**claim)
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert faults.injected() == {"dynamodb.UpdateItem": {RESET: 1}}


def test_rules_match_by_operation_and_spare_the_observer_key(faulty_server: tuple[str, AwsFaults]) -> None:
    url, faults = faulty_server
    ddb = _table(url)
    faults.set_rules([FaultRule("dynamodb", "PutItem", throttle=1.0)])
    _client(url, "dynamodb").get_item(TableName="t", Key={"k": {"S": "a"}})  # another operation
    ddb.put_item(TableName="t", Item={"k": {"S": "a"}})  # the observer's key
    with pytest.raises(ClientError):
        _client(url, "dynamodb").put_item(TableName="t", Item={"k": {"S": "b"}})
    assert faults.injected() == {"dynamodb.PutItem": {THROTTLE: 1}}


def test_in_process_lambda_tasks_see_lambdas_errors() -> None:
    faults = AwsFaults([FaultRule("lambda", "Invoke", throttle=1.0)])
    ran: list[int] = []

    def invoke() -> dict[str, Any]:
        ran.append(1)
        return {"StatusCode": 200}

    with pytest.raises(ClientError) as raised:
        faults.lambda_fault(invoke)
    assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert not ran  # a throttled invocation never runs
    faults.set_rules([FaultRule("lambda", reset_after_send=1.0)])
    with pytest.raises(ClientError) as raised:
        faults.lambda_fault(invoke)
    assert raised.value.response["Error"]["Code"] == "SdkClientException"
    assert ran == [1]  # the function ran; its response was lost
    faults.set_rules([])
    assert faults.lambda_fault(invoke) == {"StatusCode": 200}


@pytest.mark.parametrize(
    "rule",
    [
        {"throttle": 0.6, "server_error": 0.5},
        {"reset_after_send": -0.1},
        {"latency_seconds": (2.0, 1.0)},
    ],
)
def test_a_rule_that_cannot_be_a_plan_is_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultRule(**rule)


def test_latency_is_added_before_the_call() -> None:
    faults = AwsFaults([FaultRule("sqs", latency_seconds=(0.25, 0.25))], seed=1)
    assert faults.decide("sqs", "ReceiveMessage") == (None, 0.25)
    assert faults.decide("s3", "GetObject") == (None, 0.0)
    assert faults.calls() == {"s3.GetObject": 1, "sqs.ReceiveMessage": 1}
