"""The audit of recorded calls against hand-written policies, decided by iam-simulate (tools/iam)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagejobs_tools.local.aws_calls import Access, RecordedCall
from imagejobs_tools.local.iam_audit import (
    DeniedCall,
    IamEvaluator,
    IamEvaluatorError,
    UnmappedCall,
    UnusedGrant,
    audit,
)
from imagejobs_tools.local.iam_policies import FunctionPolicies, NamedPolicy

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:jobs"


def role(name: str, *statements: dict[str, object]) -> FunctionPolicies:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return FunctionPolicies(
        name, f"arn:aws:iam::123456789012:role/{name}Role", (NamedPolicy(f"{name}Policy", document),)
    )


INTAKE = role(
    "Intake",
    {
        "Sid": "JobRecords",
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
        "Resource": TABLE,
    },
    {"Sid": "Inputs", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::out/inputs/*"},
    {"Sid": "NoOutputs", "Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::out/secret/*"},
)
FINALIZE = role(
    "Finalize", {"Sid": "Update", "Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": TABLE}
)


def call(
    operation: str, *accesses: Access, service: str = "dynamodb", unmapped: str | None = None
) -> RecordedCall:
    return RecordedCall("ASIAINTAKE", service, operation, "us-east-1", 200, accesses, unmapped)


def test_denied_calls_and_unused_grants_are_reported() -> None:
    calls = [
        call("GetItem", Access("dynamodb:GetItem", TABLE)),  # allowed
        call("GetItem", Access("dynamodb:GetItem", TABLE)),
        call(
            "GetObject", Access("s3:GetObject", "arn:aws:s3:::out/outputs/x.png"), service="s3"
        ),  # by resource
        call("GetObject", Access("s3:GetObject", "arn:aws:s3:::out/secret/k"), service="s3"),  # explicit Deny
        call("SendMessageBatch", Access("sqs:SendMessage", QUEUE), service="sqs"),  # by action
        call("CreateStack", service="cloudformation", unmapped="no IAM mapping for service 'cloudformation'"),
    ]
    report = audit({"Intake": calls}, {"Intake": INTAKE, "Finalize": FINALIZE})

    assert report.denied == [
        DeniedCall(
            "Intake",
            "s3:GetObject",
            "arn:aws:s3:::out/outputs/x.png",
            "ImplicitlyDenied",
            ("s3:GetObject",),
            1,
        ),
        DeniedCall(
            "Intake", "s3:GetObject", "arn:aws:s3:::out/secret/k", "ExplicitlyDenied", ("s3:GetObject",), 1
        ),
        DeniedCall("Intake", "sqs:SendMessage", QUEUE, "ImplicitlyDenied", ("sqs:SendMessageBatch",), 1),
    ]
    # PutItem was never called, Inputs never allowed a call; Finalize made no call at all.
    assert report.unused == [
        UnusedGrant("Intake", "IntakePolicy", "JobRecords", "dynamodb:PutItem"),
        UnusedGrant("Intake", "IntakePolicy", "Inputs", "s3:GetObject"),
        UnusedGrant("Finalize", "FinalizePolicy", "Update", "dynamodb:UpdateItem"),
    ]
    assert report.unmapped == [
        UnmappedCall(
            "Intake", "cloudformation", "CreateStack", "no IAM mapping for service 'cloudformation'", 1
        )
    ]
    assert report.checked_calls == {"Intake": 6, "Finalize": 0}
    assert not report.ok
    text = report.format()
    assert (
        f"DENIED Intake: sqs:SendMessage on {QUEUE} (ImplicitlyDenied; 1 calls: sqs:SendMessageBatch)" in text
    )
    assert "UNUSED Finalize: dynamodb:UpdateItem (FinalizePolicy Update)" in text
    assert "UNMAPPED Intake: cloudformation:CreateStack (1 calls)" in text
    assert json.loads(json.dumps(report.to_dict()))["denied"][2]["operations"] == ["sqs:SendMessageBatch"]


def test_every_call_allowed_and_every_grant_used_is_ok() -> None:
    calls = [
        call("GetItem", Access("dynamodb:GetItem", TABLE)),
        call("PutItem", Access("dynamodb:PutItem", TABLE)),
        call("HeadObject", Access("s3:GetObject", "arn:aws:s3:::out/inputs/a.png"), service="s3"),
    ]
    finalize = [call("UpdateItem", Access("dynamodb:UpdateItem", TABLE))]
    report = audit({"Intake": calls, "Finalize": finalize}, {"Intake": INTAKE, "Finalize": FINALIZE})
    assert report.ok, report.format()


def test_a_wildcard_grant_is_used_by_any_action_it_matches() -> None:
    reader = role("Reader", {"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": TABLE})
    report = audit({"Reader": [call("GetItem", Access("dynamodb:GetItem", TABLE))]}, {"Reader": reader})
    assert report.ok, report.format()


def test_a_check_iam_simulate_refuses_is_reported_with_its_reason() -> None:
    # s3:GetObject takes object ARNs only: a bucket ARN here is a derivation bug, not a decision.
    calls = [call("GetObject", Access("s3:GetObject", "arn:aws:s3:::out"), service="s3")]
    (denied,) = audit({"Intake": calls}, {"Intake": INTAKE}).denied
    assert (denied.decision, denied.error) == ("Invalid", '{"message":"no.resource.types"}')


def test_calls_of_a_function_without_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="functions with no policies: Ghost"):
        audit({"Ghost": []}, {"Intake": INTAKE})


def test_a_missing_evaluator_install_says_how_to_get_it(tmp_path: Path) -> None:
    evaluator = IamEvaluator(directory=tmp_path)
    with pytest.raises(IamEvaluatorError, match="make iam-evaluator"):
        audit({"Intake": [call("GetItem", Access("dynamodb:GetItem", TABLE))]}, {"Intake": INTAKE}, evaluator)
