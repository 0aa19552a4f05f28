"""The translated template creates in moto's CloudFormation, which the local stack relies on."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imagejobs_tools.local import moto_fixes

from .conftest import ARTIFACT_BUCKET, Template, function_environments

pytestmark = pytest.mark.template

REGION = "us-east-1"
STACK = "imagejobs-test"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:imagejobs-provider-key-AbCdEf"
SIGNING_SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:imagejobs-webhooks-AbCdEf"

# Resource types moto's CloudFormation skips (with a warning) rather than creates: the local stack
# must not depend on them. Anything else unsupported would silently vanish locally.
# (The uploads queue policy only matters to S3 on AWS; moto delivers notifications without it.)
SKIPPED_BY_MOTO = {
    "AWS::SecretsManager::Secret",
    "AWS::CloudWatch::Alarm",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
}


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture
def moto_stack(
    translated_template: Template, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[dict[str, Any]]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # As the local stack creates it: with its moto fixes (an event bus's Ref is its name).
    undo = moto_fixes.install()
    with contextlib.ExitStack() as cleanup, mock_aws():
        cleanup.callback(undo)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        for resource in translated_template["Resources"].values():
            code = resource["Properties"].get("Code") or resource["Properties"].get("Content")
            if code:
                s3.put_object(Bucket=ARTIFACT_BUCKET, Key=code["S3Key"], Body=_zip())
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="moto"):
            warnings.simplefilter("ignore")  # moto warns about each resource type it skips
            cloudformation.create_stack(
                StackName=STACK,
                TemplateBody=json.dumps(translated_template),
                # moto cannot create the secret: the local stack creates it through the API and passes it in.
                Parameters=[
                    {"ParameterKey": "ApiKeySecretArn", "ParameterValue": SECRET_ARN},
                    {"ParameterKey": "WebhookSigningSecretArn", "ParameterValue": SIGNING_SECRET_ARN},
                ],
                Capabilities=["CAPABILITY_IAM"],
            )
        [stack] = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
        skipped = {
            match.group(1)
            for record in caplog.records
            if (match := re.fullmatch(r"No Moto CloudFormation support for (\S+)", record.getMessage()))
        }
        yield {"stack": stack, "skipped": skipped}


def test_stack_creates_with_every_output(moto_stack: dict[str, Any], translated_template: Template) -> None:
    stack = moto_stack["stack"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}
    assert set(outputs) == set(translated_template["Outputs"])
    assert outputs["ApiKeySecretArn"] == SECRET_ARN
    assert moto_stack["skipped"] <= SKIPPED_BY_MOTO


def test_created_functions_point_at_the_created_resources(
    moto_stack: dict[str, Any], translated_template: Template
) -> None:
    outputs = {output["OutputKey"]: output["OutputValue"] for output in moto_stack["stack"]["Outputs"]}
    resolved = {
        "JOBS_TABLE": outputs["JobsTableName"],
        "OUTPUT_BUCKET": outputs["OutputBucketName"],
        "STATE_MACHINE_ARN": outputs["StateMachineArn"],
        "PROVIDER_API_KEY_SECRET": SECRET_ARN,
        "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET_ARN,
        "JOBS_QUEUE_URL": outputs["JobsQueueUrl"],
        "INPUTS_PREFIX": outputs["InputsPrefix"],
        "BATCHES_PREFIX": outputs["BatchesPrefix"],
    }
    assert (resolved["INPUTS_PREFIX"], resolved["BATCHES_PREFIX"]) == ("inputs/", "batches/")
    declared = function_environments(translated_template)
    resources = boto3.client("cloudformation", region_name=REGION).describe_stack_resources(StackName=STACK)
    names = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in resources["StackResources"]
        if r.get("LogicalResourceId") in declared  # moto lists the resources it skipped without one
    }
    assert set(names) == set(declared)
    lambda_client = boto3.client("lambda", region_name=REGION)
    for logical_id, name in names.items():
        variables = lambda_client.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        assert set(variables) == set(declared[logical_id]), logical_id
        for variable in resolved.keys() & variables.keys():
            assert variables[variable] == resolved[variable], f"{logical_id}: {variable}"
    # Every resolved variable reaches at least one function (none is left unchecked).
    assert set(resolved) <= {v for variables in declared.values() for v in variables}
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["JobsQueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=outputs["JobsDeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )
    assert redrive["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5


def test_uploads_queue_redrives_to_its_own_dead_letter_queue(moto_stack: dict[str, Any]) -> None:
    outputs = {output["OutputKey"]: output["OutputValue"] for output in moto_stack["stack"]["Outputs"]}
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["UploadsQueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    jobs_dlq = sqs.get_queue_attributes(
        QueueUrl=outputs["JobsDeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert "UploadsDeadLetterQueue" in redrive["deadLetterTargetArn"]
    assert redrive["deadLetterTargetArn"] != jobs_dlq
    assert int(redrive["maxReceiveCount"]) == 5
