"""The functions' AWS clients, configured as the template's Globals configure them, retry every
throttle and server error AWS sends (the local stack's fault layer sends the same, in each
service's wire protocol), up to AWS_MAX_ATTEMPTS; botocore's default, "legacy", raised SQS's
RequestThrottled (HTTP 400) at the first one (found by the soak, docs/reliability.md).

No network: each request is answered with the error before it is sent (botocore's before-send)."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from imagejobs_tools.local.aws_faults import (
    DYNAMODB_ITEM_THROTTLE,
    SERVER_ERRORS,
    THROTTLES,
    AwsError,
    error_response,
)
from tests.template.conftest import Template

# One call per service the functions use, with the least valid parameters.
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "sqs": (
        "send_message_batch",
        {
            "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "Entries": [{"Id": "1", "MessageBody": "x"}],
        },
    ),
    "dynamodb": ("update_item", {"TableName": "t", "Key": {"jobId": {"S": "j"}}}),
    "s3": ("get_object", {"Bucket": "b", "Key": "k"}),
    "states": (
        "start_execution",
        {"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:m"},
    ),
    "secretsmanager": ("get_secret_value", {"SecretId": "s"}),
    "lambda": ("invoke", {"FunctionName": "f"}),
    "events": ("put_events", {"Entries": [{"Source": "s", "DetailType": "d", "Detail": "{}"}]}),
}
CLIENT_NAMES = {"states": "stepfunctions"}  # the fault layer names services as SigV4 signs them
ERRORS = [
    *((service, error) for service, error in THROTTLES.items()),
    ("dynamodb", DYNAMODB_ITEM_THROTTLE),
    *((service, error) for service, error in SERVER_ERRORS.items()),
]


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def attempts_until_given_up(service: str, error: AwsError, environment: dict[str, str]) -> int:
    """How many times a client made with `environment` sends a call every answer of which is `error`."""
    session = botocore.session.Session()
    for name, value in environment.items():
        session.set_config_variable(
            {"AWS_RETRY_MODE": "retry_mode", "AWS_MAX_ATTEMPTS": "max_attempts"}[name], value
        )
    client = session.create_client(
        CLIENT_NAMES.get(service, service),
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url="https://aws.invalid",
    )
    sent = 0

    def answer(request: Any, **_: Any) -> AWSResponse:
        nonlocal sent
        sent += 1
        status, headers, body = error_response(service, error)
        return AWSResponse(request.url, int(status.split()[0]), dict(headers), _Body(body))

    client.meta.events.register("before-send", answer)
    operation, parameters = CALLS[service]
    with pytest.raises(ClientError) as raised:
        getattr(client, operation)(**parameters)
    assert raised.value.response["Error"]["Code"] == error.code
    return sent


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest.fixture
def globals_retries(sam_template: Template) -> dict[str, str]:
    variables = sam_template["Globals"]["Function"]["Environment"]["Variables"]
    return {name: str(variables[name]) for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")}


@pytest.mark.parametrize(("service", "error"), ERRORS, ids=[f"{s}-{e.code}" for s, e in ERRORS])
def test_the_functions_clients_retry_every_throttle_and_server_error_up_to_the_attempts(
    service: str, error: AwsError, globals_retries: dict[str, str]
) -> None:
    assert attempts_until_given_up(service, error, globals_retries) == int(
        globals_retries["AWS_MAX_ATTEMPTS"]
    )


def test_the_legacy_default_would_raise_sqs_throttling_at_once() -> None:
    # Why the template sets the mode: botocore's legacy rules retry RequestThrottled only as HTTP 403.
    assert attempts_until_given_up("sqs", THROTTLES["sqs"], {"AWS_RETRY_MODE": "legacy"}) == 1
