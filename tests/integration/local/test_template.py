"""Template preparation and the poller's response rules (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.local.pollers import failed_message_ids, to_lambda_record
from imagejobs_tools.local.stack import local_queue_url
from imagejobs_tools.local.template import (
    TemplateError,
    evaluate_condition,
    prepare_template,
    split_unsupported,
    substitute_references,
)
from tests.integration.local.conftest import FIXTURE_TEMPLATE

pytestmark = pytest.mark.integration


def test_prepare_rewrites_code_and_inlines_the_definition() -> None:
    prepared = prepare_template(FIXTURE_TEMPLATE, "boot", "code.zip", {"Greeting": "hi"})
    resources = prepared.cfn["Resources"]
    assert resources["IntakeFunction"]["Properties"]["Code"] == {"S3Bucket": "boot", "S3Key": "code.zip"}
    assert set(prepared.functions) == {"IntakeFunction", "TaskFunction", "UploadFunction"}
    assert prepared.functions["TaskFunction"].module_file == FIXTURE_TEMPLATE.parent / "functions/task/app.py"
    sources = {(s.function_logical_id, s.queue_logical_id, s.batch_size) for s in prepared.sqs_sources}
    assert sources == {("IntakeFunction", "ItemsQueue", 5), ("UploadFunction", "UploadsQueue", 10)}
    (notification,) = prepared.bucket_notifications.values()
    (queue_config,) = notification["QueueConfigurations"]
    assert queue_config["Event"] == "s3:ObjectCreated:*"
    # Intrinsics are left for moto to resolve as outputs (its CloudFormation drops notifications).
    deferred_key = next(iter(queue_config["Queue"].values()))
    assert prepared.cfn["Outputs"][deferred_key]["Value"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    machine = prepared.state_machines["ItemStateMachine"]
    assert set(machine.substitution_keys) == {"TaskFunctionArn"}
    outputs = prepared.cfn["Outputs"]
    assert outputs[machine.substitution_keys["TaskFunctionArn"]]["Value"] == {
        "Fn::GetAtt": ["TaskFunction", "Arn"]
    }


def test_a_missing_handler_file_names_the_function(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      CodeUri: nowhere/\n      Handler: app.handler\n      Runtime: python3.12\n"
    )
    with pytest.raises(TemplateError, match=r"Fn\.Handler: .*nowhere/app\.py does not exist"):
        prepare_template(template, "b", "k", {})


def test_unsupported_resources_become_literals() -> None:
    cfn: dict[str, Any] = {
        "Resources": {
            "Secret": {"Type": "AWS::SecretsManager::Secret"},
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "DependsOn": ["Secret"],
                "Properties": {
                    "A": {"Ref": "Secret"},
                    "B": {"Fn::Sub": "x-${Secret}-${Secret.Id}-${Other}"},
                    "C": {"Fn::GetAtt": ["Secret", "Id"]},
                },
            },
        }
    }
    removed = split_unsupported(cfn, {"AWS::Lambda::Function"})
    assert set(removed) == {"Secret"}
    assert cfn["Resources"]["Fn"]["DependsOn"] == []
    result = substitute_references(cfn, {"Secret": {"Ref": "arn:s", "Id": "id-s"}})
    props = result["Resources"]["Fn"]["Properties"]
    assert props == {"A": "arn:s", "B": {"Fn::Sub": "x-arn:s-id-s-${Other}"}, "C": "id-s"}


def test_conditions_evaluate_over_parameters_and_defaults() -> None:
    cfn = {
        "Parameters": {"Arn": {"Type": "String", "Default": ""}},
        "Conditions": {
            "Create": {"Fn::Equals": [{"Ref": "Arn"}, ""]},
            "Keep": {"Fn::Not": [{"Condition": "Create"}]},
        },
    }
    assert evaluate_condition(cfn, "Create", {}) is True
    assert evaluate_condition(cfn, "Keep", {}) is False
    assert evaluate_condition(cfn, "Create", {"Arn": "arn:x"}) is False
    with pytest.raises(TemplateError, match="Nope"):
        evaluate_condition(cfn, "Nope", {})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}]}, {"m1"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),  # Lambda: the whole batch failed
        ({"batchItemFailures": [{"itemIdentifier": "unknown"}]}, None),
        ({"batchItemFailures": "m1"}, None),
    ],
)
def test_batch_item_failure_rules(payload: Any, expected: set[str] | None) -> None:
    assert failed_message_ids(payload, {"m1", "m2"}) == expected


def test_lambda_record_shape() -> None:
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "rh",
        "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MD5OfBody": "x",
        "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
    }
    record = to_lambda_record(message, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    assert record["eventSource"] == "aws:sqs"
    assert record["messageAttributes"]["k"]["stringValue"] == "v"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_queue_urls_are_rewritten_to_the_endpoint() -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/stack-Q-1"
    assert local_queue_url(url, "http://127.0.0.1:5") == "http://127.0.0.1:5/123456789012/stack-Q-1"
    assert local_queue_url("some-table", "http://127.0.0.1:5") == "some-table"
