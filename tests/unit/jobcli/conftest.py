from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imagejobs_tools.jobcli.client import JobsClient
from tests.unit.jobcli.support import StackResources, create_stack_resources

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def isolated_cwd_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every CLI test runs in its own directory (.imagejobs/ files land there) with fake credentials."""
    monkeypatch.chdir(tmp_path)
    for name in ("IMAGEJOBS_LOCAL", "IMAGEJOBS_STACK_NAME", "AWS_PROFILE", "AWS_ENDPOINT_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return tmp_path


@dataclass
class MockStack:
    resources: StackResources
    sqs: Any
    dynamodb: Any
    table: Any
    s3: Any

    def client(self, **kwargs: Any) -> JobsClient:
        return JobsClient(self.sqs, self.table, self.s3, self.resources.outputs(), **kwargs)

    def put(self, record: dict[str, Any]) -> None:
        self.table.put_item(Item=record)

    def received_bodies(self) -> list[str]:
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(
                    QueueUrl=self.resources.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


def _make_stack(projection: str) -> Iterator[MockStack]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        dynamodb = boto3.resource("dynamodb", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        resources = create_stack_resources(sqs, dynamodb.meta.client, s3, projection=projection)
        yield MockStack(resources, sqs, dynamodb, dynamodb.Table(resources.table_name), s3)


@pytest.fixture
def stack(isolated_cwd_and_env: Path) -> Iterator[MockStack]:
    yield from _make_stack("ALL")


@pytest.fixture
def keys_only_stack(isolated_cwd_and_env: Path) -> Iterator[MockStack]:
    yield from _make_stack("KEYS_ONLY")


class CallCounter:
    """Counts AWS API calls by operation name through botocore's event hooks."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1

    def attach(self, client: Any) -> CallCounter:
        client.meta.events.register("before-call.*.*", self)
        return self
