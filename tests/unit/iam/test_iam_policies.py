"""Each function's IAM policies from the translated template, resolved to a stack's physical names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.local.iam_policies import (
    IGNORED_MANAGED_POLICIES,
    DeployedStack,
    FunctionPolicies,
    policies_from_template,
)
from imagejobs_tools.local.template import TemplateError, evaluate_condition, prepare_template

REPO_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"
STACK = "imagejobs-local"
ACCOUNT = "123456789012"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def physical_id(logical_id: str, kind: str) -> str:
    """What moto's CloudFormation names a resource (queues by URL, secrets and state machines by ARN)."""
    if kind == "AWS::SQS::Queue":
        return f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{STACK}-{logical_id}-Q1"
    if kind == "AWS::SecretsManager::Secret":
        return f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{STACK}-{logical_id}-AbCdEf"
    if kind == "AWS::StepFunctions::StateMachine":
        return f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{STACK}-jobs"
    return f"{STACK}-{logical_id}-X1".lower() if kind == "AWS::S3::Bucket" else f"{STACK}-{logical_id}-X1"


def deploy(parameters: dict[str, str]) -> tuple[dict[str, Any], DeployedStack]:
    cfn = prepare_template(REPO_TEMPLATE, "bootstrap", "code.zip", parameters).cfn
    created = {
        lid: r["Type"]
        for lid, r in cfn["Resources"].items()
        if "Condition" not in r or evaluate_condition(cfn, r["Condition"], parameters)
    }
    resources = {lid: physical_id(lid, kind) for lid, kind in created.items()}
    return cfn, DeployedStack(STACK, "us-east-1", ACCOUNT, parameters, resources, created)


@pytest.fixture(scope="module")
def policies() -> dict[str, FunctionPolicies]:
    cfn, stack = deploy({})
    return policies_from_template(cfn, stack)


def statements(policies: FunctionPolicies) -> dict[str, dict[str, Any]]:
    """Statements by Sid (SAM's policy templates have none: by action instead)."""
    found = {}
    for policy in policies.policies:
        for statement in policy.document["Statement"]:
            found[statement.get("Sid") or str(statement["Action"])] = statement
    return found


def intrinsics_left(node: Any) -> list[Any]:
    if isinstance(node, list):
        return [i for item in node for i in intrinsics_left(item)]
    if isinstance(node, dict):
        if len(node) == 1 and (next(iter(node)) == "Ref" or next(iter(node)).startswith("Fn::")):
            return [node]
        return [i for value in node.values() for i in intrinsics_left(value)]
    return []


def test_every_function_has_its_own_role_and_policies(policies: dict[str, FunctionPolicies]) -> None:
    assert set(policies) == {
        "IntakeFunction",
        "PollFunction",
        "StoreOutputsFunction",
        "FinalizeFunction",
        "JobEventsFunction",
        "S3IntakeFunction",
        "WebhookFunction",
        "BatchResultsFunction",
    }
    assert policies["IntakeFunction"].role_arn == f"arn:aws:iam::{ACCOUNT}:role/{STACK}-IntakeFunctionRole-X1"
    assert policies["PollFunction"].role_arn == f"arn:aws:iam::{ACCOUNT}:role/{STACK}-PollFunctionRole-X1"
    for function in policies.values():
        assert intrinsics_left([p.document for p in function.policies]) == []


def test_intrinsics_resolve_to_the_stacks_physical_arns(policies: dict[str, FunctionPolicies]) -> None:
    intake = statements(policies["IntakeFunction"])
    assert intake["ReceiveJobs"]["Resource"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{STACK}-JobsQueue-Q1"
    assert (
        intake["JobRecords"]["Resource"] == f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{STACK}-JobsTable-X1"
    )
    assert intake["PresignInputImages"]["Resource"] == f"arn:aws:s3:::{STACK}-outputbucket-x1/*"
    assert (
        intake["StartWaitLoop"]["Resource"] == f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{STACK}-jobs"
    )
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{STACK}-ApiKeySecret-AbCdEf"
    assert intake["ReadProviderApiKey"]["Resource"] == secret
    s3_intake = statements(policies["S3IntakeFunction"])
    assert s3_intake["ReadUploadsSidecarsRecipesAndReports"]["Resource"] == [
        f"arn:aws:s3:::{STACK}-outputbucket-x1/inputs/*",
        f"arn:aws:s3:::{STACK}-outputbucket-x1/batches/*",
        f"arn:aws:s3:::{STACK}-outputbucket-x1/recipes/*",
    ]
    assert (
        s3_intake["WriteBatchReports"]["Resource"]
        == f"arn:aws:s3:::{STACK}-outputbucket-x1/batches/*.report.json"
    )


def test_sam_policy_templates_are_expanded(policies: dict[str, FunctionPolicies]) -> None:
    # PollFunction's AWSSecretsManagerGetSecretValuePolicy, with its Fn::If on the secret.
    (statement,) = statements(policies["PollFunction"]).values()
    assert statement["Action"] == ["secretsmanager:GetSecretValue"]
    assert (
        statement["Resource"]
        == f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{STACK}-ApiKeySecret-AbCdEf"
    )


def test_the_aws_managed_policies_are_left_out_with_their_reasons(
    policies: dict[str, FunctionPolicies],
) -> None:
    for function in policies.values():
        assert function.ignored_managed_policies == {
            f"arn:aws:iam::aws:policy/{name}": reason for name, reason in IGNORED_MANAGED_POLICIES.items()
        }


def test_conditions_pick_the_branch_and_the_policies_the_parameters_create() -> None:
    external = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:provider-key-ZyXwVu"
    cfn, stack = deploy({"ApiKeySecretArn": external, "KmsKeyArn": KMS_KEY})
    resolved = policies_from_template(cfn, stack)
    assert statements(resolved["IntakeFunction"])["ReadProviderApiKey"]["Resource"] == external
    for function in resolved.values():
        key_access = statements(function)["UseCustomerKeyThroughTheStacksServices"]
        assert key_access["Resource"] == KMS_KEY
        assert key_access["Condition"]["StringEquals"]["kms:ViaService"][0] == "sqs.us-east-1.amazonaws.com"


def small_template(role_properties: dict[str, Any], function_role: Any = None) -> dict[str, Any]:
    return {
        "Parameters": {"Prefix": {"Type": "String", "Default": "in/"}},
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket"},
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Role": function_role or {"Fn::GetAtt": ["FnRole", "Arn"]}},
            },
            "FnRole": {"Type": "AWS::IAM::Role", "Properties": role_properties},
        },
    }


SMALL_STACK = DeployedStack(
    "s",
    "eu-west-1",
    ACCOUNT,
    {},
    {"Bucket": "bkt", "Fn": "s-Fn", "FnRole": "s-FnRole"},
    {"Bucket": "AWS::S3::Bucket", "Fn": "AWS::Lambda::Function", "FnRole": "AWS::IAM::Role"},
)


def test_join_select_sub_and_no_value_resolve() -> None:
    document = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", {"Ref": "AWS::NoValue"}],
                "Resource": {
                    "Fn::Join": ["", [{"Fn::GetAtt": ["Bucket", "Arn"]}, "/", {"Ref": "Prefix"}, "*"]]
                },
                "Sid": {"Fn::Select": [1, ["A", "Second"]]},
                "Condition": {"Ref": "AWS::NoValue"},
            },
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": {"Fn::Sub": "${Bucket.Arn}/${!Literal}"},
            },
        ]
    }
    template = small_template(
        {"Policies": [{"PolicyName": "p", "PolicyDocument": document}], "Path": "/svc/"}
    )
    (resolved,) = policies_from_template(template, SMALL_STACK).values()
    assert resolved.role_arn == f"arn:aws:iam::{ACCOUNT}:role/svc/s-FnRole"
    assert resolved.policies[0].document["Statement"] == [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::bkt/in/*", "Sid": "Second"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bkt/${Literal}"},
    ]


def test_an_unknown_managed_policy_fails_instead_of_being_dropped() -> None:
    template = small_template({"ManagedPolicyArns": ["arn:aws:iam::aws:policy/AmazonS3FullAccess"]})
    with pytest.raises(TemplateError, match="AmazonS3FullAccess is unknown to the audit"):
        policies_from_template(template, SMALL_STACK)


def test_a_role_from_outside_the_template_fails() -> None:
    template = small_template({}, function_role="arn:aws:iam::123456789012:role/elsewhere")
    with pytest.raises(TemplateError, match=r"Fn\.Role: the audit needs"):
        policies_from_template(template, SMALL_STACK)
