"""FunctionCallAudit against a real moto server: two functions, each signing with a session of its
own (fake) role from moto's STS, calls attributed by key and decided against each role's policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from imagejobs_tools.local.iam_audit import DeniedCall, FunctionCallAudit, UnusedGrant
from imagejobs_tools.local.iam_policies import FunctionPolicies, NamedPolicy
from tests.integration.local.conftest import bare_moto_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/records"
JOBS_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs"
OTHER_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:other"


def role(name: str, *statements: dict[str, Any]) -> FunctionPolicies:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return FunctionPolicies(name, f"arn:aws:iam::{ACCOUNT}:role/{name}Role", (NamedPolicy(name, document),))


READER = role(
    "Reader",
    {"Sid": "Records", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE_ARN},
    {
        "Sid": "Inputs",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::files-bucket/in/*",
    },
    {"Sid": "Key", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
)
WRITER = role(
    "Writer",
    {
        "Sid": "Records",
        "Effect": "Allow",
        "Action": ["dynamodb:PutItem", "dynamodb:DeleteItem"],
        "Resource": TABLE_ARN,
    },
    {"Sid": "Enqueue", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": JOBS_QUEUE_ARN},
    {
        "Sid": "Outputs",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::files-bucket/out/*",
    },
)


@pytest.fixture()
def endpoint() -> Iterator[str]:
    with bare_moto_server() as url:
        yield url


def session(credentials: dict[str, str]) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
        region_name=REGION,
    )


def test_calls_are_attributed_to_each_functions_role_and_decided_against_it(endpoint: str) -> None:
    setup = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    dynamodb = setup.client("dynamodb", endpoint_url=endpoint)
    dynamodb.create_table(
        TableName="records",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    setup.client("s3", endpoint_url=endpoint).create_bucket(Bucket="files-bucket")
    setup.client("s3", endpoint_url=endpoint).put_object(Bucket="files-bucket", Key="in/a b.png", Body=b"png")
    sqs = setup.client("sqs", endpoint_url=endpoint)
    jobs_url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    other_url = sqs.create_queue(QueueName="other")["QueueUrl"]
    secret_arn = setup.client("secretsmanager", endpoint_url=endpoint).create_secret(
        Name="key", SecretString="k"
    )["ARN"]

    audit = FunctionCallAudit({"Reader": READER, "Writer": WRITER}, REGION, ACCOUNT)
    audit.install(endpoint)
    try:
        reader_credentials = audit.credentials_for("Reader")
        writer_credentials = audit.credentials_for("Writer")
        assert reader_credentials["AWS_ACCESS_KEY_ID"] != writer_credentials["AWS_ACCESS_KEY_ID"]
        assert audit.credentials_for("Reader") == reader_credentials  # one session per function

        dynamodb.describe_table(TableName="records")
        reader, writer = session(reader_credentials), session(writer_credentials)
        item = {"id": {"S": "job-1"}}
        writer.client("dynamodb", endpoint_url=endpoint).put_item(TableName="records", Item=item)
        reader.client("dynamodb", endpoint_url=endpoint).get_item(TableName="records", Key=item)
        reader.client("dynamodb", endpoint_url=endpoint).put_item(
            TableName="records", Item=item
        )  # not its grant
        reader.client("secretsmanager", endpoint_url=endpoint).get_secret_value(SecretId="key")
        # A presigned URL is authorised as its signer, whoever fetches it (the provider, for inputs).
        url = reader.client("s3", endpoint_url=endpoint).generate_presigned_url(
            "get_object", Params={"Bucket": "files-bucket", "Key": "in/a b.png"}
        )
        assert requests.get(url, timeout=10).content == b"png"
        writer_sqs = writer.client("sqs", endpoint_url=endpoint)
        writer_sqs.send_message(QueueUrl=jobs_url, MessageBody="{}")
        writer_sqs.send_message_batch(
            QueueUrl=other_url, Entries=[{"Id": "1", "MessageBody": "{}"}]
        )  # other queue
        # Missing under out/: S3 tells it apart from forbidden only with s3:ListBucket, which Writer lacks.
        with pytest.raises(writer.client("s3").exceptions.ClientError):
            writer.client("s3", endpoint_url=endpoint).head_object(Bucket="files-bucket", Key="out/none.png")
    finally:
        audit.uninstall()
    # Nothing is recorded once uninstalled.
    recorded = len(audit.calls())
    dynamodb.list_tables()
    assert len(audit.calls()) == recorded

    by_function = audit.function_calls()
    assert [c.operation for c in by_function["Reader"]] == [
        "GetItem",
        "PutItem",
        "GetSecretValue",
        "GetObject",
    ]
    assert [c.operation for c in by_function["Writer"]] == [
        "PutItem",
        "SendMessage",
        "SendMessageBatch",
        "HeadObject",
    ]
    # The setup client's calls and the AssumeRole calls are recorded but belong to no function.
    function_keys = {reader_credentials["AWS_ACCESS_KEY_ID"], writer_credentials["AWS_ACCESS_KEY_ID"]}
    others = {(c.access_key_id, c.operation) for c in audit.calls() if c.access_key_id not in function_keys}
    assert others == {("testing", "AssumeRole"), ("testing", "DescribeTable")}

    report = audit.report()
    assert report.denied == [
        DeniedCall("Reader", "dynamodb:PutItem", TABLE_ARN, "ImplicitlyDenied", ("dynamodb:PutItem",), 1),
        DeniedCall(
            "Writer", "s3:ListBucket", "arn:aws:s3:::files-bucket", "ImplicitlyDenied", ("s3:HeadObject",), 1
        ),
        DeniedCall(
            "Writer", "sqs:SendMessage", OTHER_QUEUE_ARN, "ImplicitlyDenied", ("sqs:SendMessageBatch",), 1
        ),
    ]
    assert report.unused == [UnusedGrant("Writer", "Writer", "Records", "dynamodb:DeleteItem")]
    assert report.unmapped == []
    # The secret was asked for by name; the check used its full ARN.
    (secret_call,) = [c for c in by_function["Reader"] if c.operation == "GetSecretValue"]
    assert secret_call.accesses[0].resource == secret_arn
