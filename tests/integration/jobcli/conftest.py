"""The moto server and the local-stack file the `imagejobs` console script finds it by."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.unit.jobcli.support import StackResources, create_stack_resources

REGION = "us-east-1"
CLI_TIMEOUT = 60


def console_script() -> str:
    script = Path(sys.executable).with_name("imagejobs")
    if script.exists():
        return str(script)
    found = shutil.which("imagejobs")
    if not found:
        pytest.fail("the imagejobs console script is not installed (pip install -e .)")
    return found


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class LocalStack:
    cwd: Path
    endpoint_url: str
    resources: StackResources
    sqs: Any
    table: Any
    s3: Any

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [console_script(), *args], cwd=self.cwd, env=cli_env(), capture_output=True, text=True,
            timeout=CLI_TIMEOUT, check=False, input=stdin,
        )  # fmt: skip

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [console_script(), *args], cwd=self.cwd, env=cli_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


def cli_env() -> dict[str, str]:
    """The user's environment without any AWS settings: the local stack needs none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMAGEJOBS_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["COLUMNS"] = "200"
    return env


def write_local_stack_file(cwd: Path, endpoint_url: str, outputs: dict[str, str]) -> None:
    path = cwd / ".imagejobs" / "local-stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"endpointUrl": endpoint_url, "region": REGION, "outputs": outputs}))


@pytest.fixture
def local_stack(moto_endpoint: str, tmp_path: Path) -> LocalStack:
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    sqs = session.client("sqs", endpoint_url=moto_endpoint)
    dynamodb = session.resource("dynamodb", endpoint_url=moto_endpoint)
    s3 = session.client("s3", endpoint_url=moto_endpoint)
    resources = create_stack_resources(sqs, dynamodb.meta.client, s3, suffix="-" + uuid.uuid4().hex[:8])
    write_local_stack_file(tmp_path, moto_endpoint, resources.outputs())
    return LocalStack(tmp_path, moto_endpoint, resources, sqs, dynamodb.Table(resources.table_name), s3)
