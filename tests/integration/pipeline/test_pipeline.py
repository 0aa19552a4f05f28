"""The real handlers end to end: in-process moto for AWS, the provider simulator over real HTTP.

Step Functions is driven by hand here (poll until terminal, then the next function) so the
test stays fast; the local stack runs the real state machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from imagejobs.store import JobStore
from moto import mock_aws
from moto.server import ThreadedMotoServer
from PIL import Image

from imagejobs_tools.sim import SimulatorConfig, start_simulator
from tests.conftest import SAMPLE_ENV, FakeLambdaContext
from tests.unit.domain.fakes import create_jobs_table

pytestmark = pytest.mark.integration

API_KEY = "sk_test_a"
SECRET_NAME = "imagejobs/provider-api-key"


@dataclass
class Pipeline:
    sim: Any
    store: JobStore
    s3: Any
    sfn: Any
    env: dict[str, str]
    handlers: dict[str, ModuleType]
    context: FakeLambdaContext

    def deliver(self, *bodies: tuple[str, str]) -> dict[str, Any]:
        """One SQS batch of (messageId, body) through the intake handler."""
        records = [
            {
                "messageId": mid,
                "receiptHandle": f"rh-{mid}",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
                "awsRegion": "us-east-1",
            }
            for mid, body in bodies
        ]
        result: dict[str, Any] = self.handlers["intake"].lambda_handler({"Records": records}, self.context)
        return result

    def execution_input(self, job_id: str) -> dict[str, Any]:
        arn = self.env["STATE_MACHINE_ARN"].replace(":stateMachine:", ":execution:") + ":" + job_id
        loaded: dict[str, Any] = json.loads(self.sfn.describe_execution(executionArn=arn)["input"])
        return loaded

    def run_execution(self, job_id: str, max_polls: int = 200) -> dict[str, Any]:
        """What the state machine does: poll until terminal, then store outputs or finalize."""
        state = self.execution_input(job_id)
        for _ in range(max_polls):
            state = self.handlers["poll"].lambda_handler(state, self.context)
            if state["poll"]["status"] != "PENDING":
                break
            time.sleep(0.02)  # the Wait state, shortened
        if state["poll"]["status"] == "COMPLETED":
            state["stored"] = self.handlers["store_outputs"].lambda_handler(state, self.context)
        elif state["poll"]["status"] == "FAILED":
            event = {k: state[k] for k in ("jobId", "taskId", "poll", "polls")} | {"outcome": "FAILED"}
            self.handlers["finalize"].lambda_handler(event, self.context)
        record = self.store.get(job_id)
        assert record is not None
        return record


def _create_resources(env: dict[str, str]) -> tuple[JobStore, Any, Any]:
    store = JobStore(create_jobs_table(boto3.resource("dynamodb"), env["JOBS_TABLE"]))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=env["OUTPUT_BUCKET"])
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="imagejobs-job",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/imagejobs-sfn",
    )
    assert machine["stateMachineArn"] == env["STATE_MACHINE_ARN"]
    boto3.client("secretsmanager").create_secret(
        Name=SECRET_NAME, SecretString=json.dumps({"apiKey": API_KEY})
    )
    return store, s3, sfn


@contextlib.contextmanager
def _pipeline(
    monkeypatch: pytest.MonkeyPatch, load_handler: Callable[[str], ModuleType], moto_server: bool
) -> Iterator[Pipeline]:
    sim = start_simulator(SimulatorConfig(port=0, api_keys={API_KEY: 1000}, latency=(0.0, 0.05), seed=7))
    server = None
    try:
        host_port = sim.url.split("://", 1)[1]
        env = {
            **SAMPLE_ENV,
            "PROVIDER_BASE_URL": sim.url,
            "URL_ALLOW_HOSTS": host_port,
            "PROVIDER_API_KEY_SECRET": SECRET_NAME,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with contextlib.ExitStack() as stack:
            if moto_server:
                # A real HTTP S3 endpoint, so the simulator can download presigned input URLs.
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
                requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
                monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
            else:
                stack.enter_context(mock_aws())
            store, s3, sfn = _create_resources(env)
            handlers = {name: load_handler(name) for name in ("intake", "poll", "store_outputs", "finalize")}
            yield Pipeline(sim, store, s3, sfn, env, handlers, FakeLambdaContext())
            for name in ("intake", "poll"):  # the functions that talk to the provider
                handlers[name].runtime.provider.close()
    finally:
        if server is not None:
            server.stop()
        sim.stop()


@pytest.fixture
def pipeline(
    monkeypatch: pytest.MonkeyPatch, load_handler: Callable[[str], ModuleType]
) -> Iterator[Pipeline]:
    with _pipeline(monkeypatch, load_handler, moto_server=False) as built:
        yield built


@pytest.fixture
def served_pipeline(
    monkeypatch: pytest.MonkeyPatch, load_handler: Callable[[str], ModuleType]
) -> Iterator[Pipeline]:
    with _pipeline(monkeypatch, load_handler, moto_server=True) as built:
        yield built


def key_stats(pipeline: Pipeline) -> dict[str, Any]:
    [stats] = pipeline.sim.admin.stats()["keys"].values()
    return dict(stats)


def test_job_completes_with_decodable_outputs_in_the_right_aspect_ratio(pipeline: Pipeline) -> None:
    body = json.dumps(
        {
            "jobId": "wide-1",
            "prompt": "a lighthouse at dusk",
            "aspectRatio": "16:9",
            "metadata": {"team": "design"},
        }
    )
    assert pipeline.deliver(("m-1", body)) == {"batchItemFailures": []}
    record = pipeline.run_execution("wide-1")
    assert record["status"] == "COMPLETED", record
    assert [h["status"] for h in record["statusHistory"]] == [
        "RECEIVED",
        "SUBMITTING",
        "SUBMITTED",
        "COMPLETED",
    ]
    assert record["creditsUsed"] == 3 and record["creditsRefunded"] == 0
    assert record["outputs"]
    for output in record["outputs"]:
        obj = pipeline.s3.get_object(Bucket=output["bucket"], Key=output["key"])
        data = obj["Body"].read()
        assert len(data) == output["bytes"]
        assert obj["Metadata"]["team"] == "design"
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            assert Image.MIME[image.format] == output["contentType"]
        assert abs(width / height - 16 / 9) < 0.02
        assert output["key"].startswith("outputs/wide-1/")


def test_provider_failure_is_recorded_failed_with_refund(pipeline: Pipeline) -> None:
    pipeline.sim.admin.set_faults(task_failure_rate=1.0, failure_codes=["STORAGE_ERROR"])
    before = key_stats(pipeline)
    pipeline.deliver(("m-2", json.dumps({"jobId": "fail-1", "prompt": "a fox"})))
    record = pipeline.run_execution("fail-1")
    assert record["status"] == "FAILED"
    assert record["error"]["source"] == "provider" and record["error"]["code"] == "STORAGE_ERROR"
    assert record["creditsRefunded"] == record["creditsUsed"] == 3
    after = key_stats(pipeline)
    assert after["balance"] == before["balance"]  # charged, then refunded by the provider
    assert (after["spent"], after["refunded"], after["tasksCreated"]) == (3, 3, 1)


def test_duplicate_delivery_creates_one_provider_task(pipeline: Pipeline) -> None:
    body = json.dumps({"jobId": "dup-1", "prompt": "a fox"})
    first = pipeline.deliver(("m-3", body), ("m-3-copy", body))  # duplicate inside one batch
    second = pipeline.deliver(("m-3", body))  # and redelivered later
    assert first == second == {"batchItemFailures": []}
    assert pipeline.sim.admin.stats()["tasks"] == 1
    assert key_stats(pipeline)["spent"] == 3
    record = pipeline.run_execution("dup-1")
    assert record["status"] == "COMPLETED"
    assert record["submitAttempts"] == 1
    listed = pipeline.sfn.list_executions(stateMachineArn=pipeline.env["STATE_MACHINE_ARN"])["executions"]
    assert [e["name"] for e in listed] == ["dup-1"]


def test_invalid_job_never_reaches_the_provider(pipeline: Pipeline) -> None:
    pipeline.deliver(("m-4", json.dumps({"jobId": "bad-1", "prompt": "x", "aspectRatio": "7:3"})))
    record = pipeline.store.get("bad-1")
    assert record is not None and record["status"] == "REJECTED"
    assert "aspectRatio" in record["error"]["fieldErrors"]
    assert pipeline.sim.admin.stats()["tasks"] == 0


def test_s3_input_is_presigned_and_fetched_by_the_provider(served_pipeline: Pipeline) -> None:
    pipeline = served_pipeline
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    bucket = pipeline.env["OUTPUT_BUCKET"]
    pipeline.s3.put_object(Bucket=bucket, Key="inputs/ref.png", Body=buffer.getvalue())
    body = {"jobId": "edit-1", "prompt": "make it blue", "inputImageUrls": [f"s3://{bucket}/inputs/ref.png"]}
    assert pipeline.deliver(("m-5", json.dumps(body))) == {"batchItemFailures": []}
    record = pipeline.run_execution("edit-1")
    assert record["status"] == "COMPLETED", record
    assert record["request"]["inputImageUrls"] == [f"s3://{bucket}/inputs/ref.png"]
    [task] = pipeline.sim.admin.tasks()
    [sent] = task["inputImageUrls"]
    assert "inputs/ref.png" in sent and "Signature" in sent
    [fetched] = task["inputsFetched"]
    assert fetched["ok"] is True, fetched
