"""The IAM checks the call recorder derives per request (src/imagejobs_tools/local/aws_calls.py)."""

from __future__ import annotations

from typing import Any

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from imagejobs_tools.local import aws_calls
from imagejobs_tools.local.aws_calls import (
    ArnContext,
    CallRecorder,
    CallRecorderError,
    Signer,
    UnmappedOperation,
    derive_accesses,
    request_signer,
)

REGION = "us-east-1"
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:jobs"
LOCAL_QUEUE_URL = "http://127.0.0.1:4566/123456789012/jobs"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:imagejobs-local-jobs"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:api-key-AbCdEf"


def known_secrets(account: str, region: str, secret_id: str) -> str | None:
    return SECRET if secret_id in ("api-key", SECRET) else None


CONTEXT = ArnContext(secret_arn=known_secrets)


def accesses(service: str, operation: str, status: int = 200, **params: Any) -> list[tuple[str, str]]:
    derived = derive_accesses(service, operation, params, REGION, CONTEXT, status)
    return [(a.action, a.resource) for a in derived]


@pytest.mark.parametrize(
    ("service", "operation", "params", "expected"),
    [
        # DynamoDB: the table, an index under it, one check per table or transaction item.
        ("dynamodb", "GetItem", {"TableName": "jobs"}, [("dynamodb:GetItem", TABLE)]),
        ("dynamodb", "UpdateItem", {"TableName": TABLE}, [("dynamodb:UpdateItem", TABLE)]),
        (
            "dynamodb",
            "Query",
            {"TableName": "jobs", "IndexName": "ByStatus"},
            [("dynamodb:Query", f"{TABLE}/index/ByStatus")],
        ),
        ("dynamodb", "Scan", {"TableName": "jobs"}, [("dynamodb:Scan", TABLE)]),
        ("dynamodb", "ListTables", {}, [("dynamodb:ListTables", "*")]),
        (
            "dynamodb",
            "BatchWriteItem",
            {"RequestItems": {"jobs": [], "other": []}},
            [
                ("dynamodb:BatchWriteItem", TABLE),
                ("dynamodb:BatchWriteItem", "arn:aws:dynamodb:us-east-1:123456789012:table/other"),
            ],
        ),
        (
            "dynamodb",
            "TransactWriteItems",
            {
                "TransactItems": [
                    {"Put": {"TableName": "jobs"}},
                    {"Update": {"TableName": "jobs"}},
                    {"Delete": {"TableName": "jobs"}},
                    {"ConditionCheck": {"TableName": "jobs"}},
                ]
            },
            [
                ("dynamodb:PutItem", TABLE),
                ("dynamodb:UpdateItem", TABLE),
                ("dynamodb:DeleteItem", TABLE),
                ("dynamodb:ConditionCheckItem", TABLE),
            ],
        ),
        (
            "dynamodb",
            "TransactGetItems",
            {"TransactItems": [{"Get": {"TableName": "jobs"}}]},
            [("dynamodb:GetItem", TABLE)],
        ),
        # SQS: the queue ARN from its URL (local or AWS); batch calls need the single-message action.
        ("sqs", "SendMessageBatch", {"QueueUrl": LOCAL_QUEUE_URL}, [("sqs:SendMessage", QUEUE)]),
        ("sqs", "DeleteMessageBatch", {"QueueUrl": LOCAL_QUEUE_URL}, [("sqs:DeleteMessage", QUEUE)]),
        (
            "sqs",
            "ChangeMessageVisibility",
            {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/210987654321/jobs"},
            [("sqs:ChangeMessageVisibility", "arn:aws:sqs:eu-west-1:210987654321:jobs")],
        ),
        ("sqs", "GetQueueUrl", {"QueueName": "jobs"}, [("sqs:GetQueueUrl", QUEUE)]),
        ("sqs", "ListQueues", {}, [("sqs:ListQueues", "*")]),
        # S3: object and bucket ARNs, the IAM action behind each API operation.
        (
            "s3",
            "HeadObject",
            {"Bucket": "out", "Key": "a b/c.png"},
            [("s3:GetObject", "arn:aws:s3:::out/a b/c.png")],
        ),
        (
            "s3",
            "GetObject",
            {"Bucket": "out", "Key": "k", "VersionId": "v1"},
            [("s3:GetObjectVersion", "arn:aws:s3:::out/k")],
        ),
        ("s3", "UploadPart", {"Bucket": "out", "Key": "k"}, [("s3:PutObject", "arn:aws:s3:::out/k")]),
        (
            "s3",
            "CompleteMultipartUpload",
            {"Bucket": "out", "Key": "k"},
            [("s3:PutObject", "arn:aws:s3:::out/k")],
        ),
        (
            "s3",
            "AbortMultipartUpload",
            {"Bucket": "out", "Key": "k"},
            [("s3:AbortMultipartUpload", "arn:aws:s3:::out/k")],
        ),
        (
            "s3",
            "PutObject",
            {"Bucket": "out", "Key": "k", "Tagging": "imagejobs-orphan=true"},
            [("s3:PutObject", "arn:aws:s3:::out/k"), ("s3:PutObjectTagging", "arn:aws:s3:::out/k")],
        ),
        (
            "s3",
            "CopyObject",
            {"Bucket": "out", "Key": "copy", "CopySource": "in/a%20b.png?versionId=v2"},
            [("s3:PutObject", "arn:aws:s3:::out/copy"), ("s3:GetObjectVersion", "arn:aws:s3:::in/a b.png")],
        ),
        (
            "s3",
            "DeleteObjects",
            {"Bucket": "out", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b", "VersionId": "v"}]}},
            [("s3:DeleteObject", "arn:aws:s3:::out/a"), ("s3:DeleteObjectVersion", "arn:aws:s3:::out/b")],
        ),
        ("s3", "ListObjectsV2", {"Bucket": "out"}, [("s3:ListBucket", "arn:aws:s3:::out")]),
        ("s3", "HeadBucket", {"Bucket": "out"}, [("s3:ListBucket", "arn:aws:s3:::out")]),
        ("s3", "ListBuckets", {}, [("s3:ListAllMyBuckets", "*")]),
        # Step Functions, Secrets Manager (a name resolves to the full ARN), Lambda, STS.
        ("states", "StartExecution", {"stateMachineArn": MACHINE}, [("states:StartExecution", MACHINE)]),
        (
            "states",
            "DescribeExecution",
            {"executionArn": f"{MACHINE.replace('stateMachine', 'execution')}:job-1"},
            [("states:DescribeExecution", f"{MACHINE.replace('stateMachine', 'execution')}:job-1")],
        ),
        (
            "secretsmanager",
            "GetSecretValue",
            {"SecretId": "api-key"},
            [("secretsmanager:GetSecretValue", SECRET)],
        ),
        (
            "secretsmanager",
            "GetSecretValue",
            {"SecretId": SECRET},
            [("secretsmanager:GetSecretValue", SECRET)],
        ),
        (
            "lambda",
            "Invoke",
            {"FunctionName": "poll", "Qualifier": "live"},
            [("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:poll:live")],
        ),
        (
            "lambda",
            "GetFunctionConfiguration",
            {"FunctionName": "210987654321:function:poll"},
            [("lambda:GetFunctionConfiguration", "arn:aws:lambda:us-east-1:210987654321:function:poll")],
        ),
        ("sts", "GetCallerIdentity", {}, [("sts:GetCallerIdentity", "*")]),
    ],
)
def test_each_operation_needs_the_iam_checks_aws_makes(
    service: str, operation: str, params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert accesses(service, operation, **params) == expected


def test_a_missing_object_needs_list_bucket_to_be_told_apart_from_a_forbidden_one() -> None:
    assert accesses("s3", "HeadObject", 404, Bucket="out", Key="k") == [
        ("s3:GetObject", "arn:aws:s3:::out/k"),
        ("s3:ListBucket", "arn:aws:s3:::out"),
    ]
    assert accesses("s3", "PutObject", 404, Bucket="out", Key="k") == [("s3:PutObject", "arn:aws:s3:::out/k")]


@pytest.mark.parametrize(
    ("service", "operation", "params", "reason"),
    [
        ("cloudformation", "CreateStack", {}, "no IAM mapping for service 'cloudformation'"),
        ("s3", "PutBucketLifecycleConfiguration", {"Bucket": "out"}, "no IAM mapping for s3"),
        ("states", "SendTaskSuccess", {}, "no IAM mapping for states SendTaskSuccess"),
        ("dynamodb", "ExecuteStatement", {"Statement": "SELECT 1"}, "no TableName"),
        ("sqs", "SendMessage", {"QueueUrl": "http://127.0.0.1:4566/jobs"}, "not a queue URL"),
        ("secretsmanager", "GetSecretValue", {"SecretId": "nothing"}, "no secret 'nothing'"),
    ],
)
def test_an_operation_without_a_mapping_is_reported_not_guessed(
    service: str, operation: str, params: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnmappedOperation, match=reason):
        accesses(service, operation, **params)


def test_the_signer_comes_from_the_sigv4_header_or_a_presigned_url() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=ASIAFUNCTION/20260101/eu-west-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    assert request_signer(header, {}, REGION) == Signer("ASIAFUNCTION", "dynamodb", "eu-west-1")
    presigned = {"X-Amz-Credential": ["ASIAFUNCTION/20260101/us-east-1/s3/aws4_request"]}
    assert request_signer(None, presigned, REGION) == Signer("ASIAFUNCTION", "s3", "us-east-1")
    # botocore's SigV2 presigned URLs (S3 only) name the key alone.
    assert request_signer(None, {"AWSAccessKeyId": ["ASIAFUNCTION"]}, REGION) == Signer(
        "ASIAFUNCTION", "s3", REGION
    )
    assert request_signer(None, {}, REGION) == Signer(None, "", REGION)


def test_the_recorder_hooks_moto_once_and_its_undo_restores_moto() -> None:
    aws_calls.check()
    before = DomainDispatcherApplication.__dict__["__call__"]
    undo = CallRecorder().install()
    try:
        assert DomainDispatcherApplication.__dict__["__call__"] is not before
        with pytest.raises(CallRecorderError, match="already installed"):
            CallRecorder().install()
    finally:
        undo()
    assert DomainDispatcherApplication.__dict__["__call__"] is before
