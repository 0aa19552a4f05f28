"""The whole local stack in a subprocess (`imagejobs local up`), driven only through its public endpoints.

A subprocess keeps moto's process-global state (backends, hooks, os.environ)
away from every other test in the xdist worker, and exercises `local up`,
its state file and its SIGTERM shutdown as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from imagejobs.store import TERMINAL

from imagejobs_tools.sim import SimulatorAdmin

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
API_KEY = "sk_test_local"


@dataclass
class RunningStack:
    endpoint_url: str
    outputs: dict[str, str]
    sim: SimulatorAdmin
    log_path: Path

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2}),
        )

    def send(self, body: dict[str, Any]) -> str:
        response = self.client("sqs").send_message(
            QueueUrl=self.outputs["JobsQueueUrl"], MessageBody=json.dumps(body)
        )
        return str(response["MessageId"])

    def record(self, job_id: str) -> dict[str, Any] | None:
        item = (
            self.client("dynamodb")
            .get_item(
                TableName=self.outputs["JobsTableName"], Key={"jobId": {"S": job_id}}, ConsistentRead=True
            )
            .get("Item")
        )
        if item is None:
            return None
        deserializer = TypeDeserializer()
        return {key: deserializer.deserialize(value) for key, value in item.items()}

    def wait_terminal(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(
            lambda: (r := self.record(job_id)) is not None and r.get("status") in TERMINAL and r,
            timeout,
            what=f"job {job_id} terminal (log: {self.log_path})",
        )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


@contextmanager
def local_up(
    workdir: Path, *options: str, start_timeout: float = 90, stop_timeout: float = 60
) -> Iterator[RunningStack]:
    """`imagejobs local up OPTIONS` in `workdir` until the block ends; then SIGTERM, and a clean stop
    (exit 0, state file removed) is asserted."""
    state_file = workdir / ".imagejobs" / "local-stack.json"
    log_path = workdir / "local-up.log"
    command = [
        sys.executable, "-m", "imagejobs_tools.cli", "local", "up",
        "--template", str(TEMPLATE),
        "--state-file", str(state_file),
        "--api-key", API_KEY,
        *options,
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(
            lambda: state_file.exists() or process.poll() is not None,
            timeout=start_timeout,
            what=f"the local stack to start (log: {log_path})",
        )
        if process.poll() is not None:
            pytest.fail(f"imagejobs local up exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        state = json.loads(state_file.read_text())
        assert state["region"] == "us-east-1"
        yield RunningStack(
            state["endpointUrl"], state["outputs"], SimulatorAdmin(state["simulatorUrl"]), log_path
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert returncode == 0, log_path.read_text()[-4000:]
    assert not state_file.exists()  # removed on a clean stop


def own_stack_config(stack_name: str, poll_interval_seconds: int, **parameters: str) -> Any:
    """A module's own in-process stack: quick simulator, warnings only, no metrics output."""
    from imagejobs_tools.local.stack import LocalStackConfig

    return LocalStackConfig(
        template_path=TEMPLATE,
        stack_name=stack_name,
        sim_latency=(0.0, 0.01),
        poll_interval_seconds=poll_interval_seconds,
        parameter_overrides={"LogLevel": "WARNING", **parameters},
        environment_overrides={"POWERTOOLS_METRICS_DISABLED": "true"},
    )


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not TEMPLATE.is_file():
        pytest.skip("template.yaml not present")
    # Poll interval 0: the template allows it for local tests.
    options = ("--sim-latency", "0:0.05", "--poll-interval", "0", "--show-events")
    with local_up(tmp_path_factory.mktemp("localstack"), *options) as running:
        yield running


@pytest.fixture
def stack(local_stack: RunningStack) -> Iterator[RunningStack]:
    """The shared stack with the simulator's faults cleared around each test."""
    local_stack.sim.set_faults(task_failure_rate=0.0, submit_500_rate=0.0)
    yield local_stack
    local_stack.sim.set_faults(task_failure_rate=0.0, submit_500_rate=0.0)
