"""Run statemachine/job.asl.json on moto's in-process Step Functions engine.

The three Lambda functions exist in moto, but every invocation is routed to a
scripted fake (``LambdaFunction._invoke_lambda`` replaced, see
docs/architecture.md "Local stack"), so the tests exercise the real ASL: its
Choice rules, Retry/Catch policies and the payloads each Task sends.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from imagejobs_tools.local.template import jobs_table_definition

REPO_ROOT = Path(__file__).resolve().parents[3]
ASL_PATH = REPO_ROOT / "statemachine" / "job.asl.json"
REGION = "us-east-1"

# The DefinitionSubstitutions keys the template passes (docs/architecture.md).
FUNCTION_PLACEHOLDERS = {
    "PollFunctionArn": "imagejobs-poll",
    "StoreOutputsFunctionArn": "imagejobs-store-outputs",
    "FinalizeFunctionArn": "imagejobs-finalize",
}

# The other substitution: the jobs table the ClaimHandOver state writes to.
TABLE_NAME = "imagejobs-test-jobs"
OTHER_PLACEHOLDERS = {"JobsTableName": TABLE_NAME}

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def substitute_definition(definition: str, substitutions: Mapping[str, str]) -> str:
    """Apply DefinitionSubstitutions the way CloudFormation does (moto ignores them).

    Every ``${Name}`` must have a value: a leftover placeholder would only fail
    later, inside an execution, with a far less clear error.
    """
    missing = sorted({name for name in _PLACEHOLDER.findall(definition) if name not in substitutions})
    if missing:
        raise KeyError(
            f"no substitution for placeholder(s) {', '.join(missing)} in the state machine definition"
        )
    return _PLACEHOLDER.sub(lambda match: substitutions[match.group(1)], definition)


class LambdaError(Exception):
    """Raised by a scripted handler: becomes a Lambda error payload with this errorType."""

    def __init__(self, error_type: str, message: str = "scripted failure") -> None:
        super().__init__(message)
        self.error_type = error_type


Handler = Callable[[dict[str, Any]], Any]


@dataclass
class FakeLambdas:
    """Scripted handlers per function name, and a record of every call."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events_for(self, function_name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for name, event in self.calls if name == function_name]

    def dispatch(self, function_name: str, event: Any) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else event
        with self.lock:
            self.calls.append((function_name, payload))
        handler = self.handlers.get(function_name)
        if handler is None:
            return self._error("ResourceNotFoundException", f"no scripted handler for {function_name}")
        try:
            return json.dumps(handler(payload)), False, ""
        except LambdaError as error:
            return self._error(error.error_type, str(error))

    @staticmethod
    def _error(error_type: str, message: str) -> tuple[str, bool, str]:
        body = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
        return json.dumps(body), True, ""


@dataclass(frozen=True)
class ExecutionResult:
    status: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]

    @property
    def entered_states(self) -> list[str]:
        """State names in the order the execution entered them."""
        return [
            event["stateEnteredEventDetails"]["name"]
            for event in self.history
            if "stateEnteredEventDetails" in event
        ]


@dataclass
class StateMachineHarness:
    client: Any
    state_machine_arn: str
    fakes: FakeLambdas
    retry_sleeps: list[float]
    table: Any = None  # the jobs table (boto3 Table), empty at start

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def finished(self, arn: str, timeout: float = 30.0) -> dict[str, Any]:
        """DescribeExecution once the execution has left RUNNING."""
        deadline = time.monotonic() + timeout
        while True:
            described = dict(self.client.describe_execution(executionArn=arn))
            if described["status"] != "RUNNING":
                return described
            if time.monotonic() > deadline:
                raise AssertionError(f"execution still RUNNING after {timeout}s")
            time.sleep(0.01)

    def run(self, execution_input: dict[str, Any], timeout: float = 30.0) -> ExecutionResult:
        started = self.client.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=str(execution_input["jobId"]),
            input=json.dumps(execution_input),
        )
        arn = started["executionArn"]
        described = self.finished(arn, timeout)
        history = self.client.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        output = described.get("output")
        return ExecutionResult(
            status=described["status"],
            output=json.loads(output) if output else None,
            error=described.get("error"),
            cause=described.get("cause"),
            history=history,
        )


def _zip_with_handler() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture
def state_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[StateMachineHarness]:
    """The real ASL, created through the Step Functions API with the function ARNs substituted."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    fakes = FakeLambdas()

    def fake_invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        return fakes.dispatch(self.function_name, event if event is not None else {})

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", fake_invoke)
    # Retry intervals are real sleeps in the engine: record them instead of waiting.
    retry_sleeps: list[float] = []
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=retry_sleeps.append))

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        iam = boto3.client("iam", region_name=REGION)
        role_arn = iam.create_role(
            RoleName="imagejobs-test",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        awslambda = boto3.client("lambda", region_name=REGION)
        arns: dict[str, str] = {}
        for placeholder, function_name in FUNCTION_PLACEHOLDERS.items():
            arns[placeholder] = awslambda.create_function(
                FunctionName=function_name,
                Runtime="python3.12",
                Role=role_arn,
                Handler="app.lambda_handler",
                Code={"ZipFile": _zip_with_handler()},
            )["FunctionArn"]
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(TableName=TABLE_NAME, **jobs_table_definition())
        table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE_NAME)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        substitutions = {**arns, **OTHER_PLACEHOLDERS}
        definition = substitute_definition(ASL_PATH.read_text(encoding="utf-8"), substitutions)
        state_machine_arn = sfn.create_state_machine(
            name="imagejobs-test", definition=definition, roleArn=role_arn
        )["stateMachineArn"]
        yield StateMachineHarness(sfn, state_machine_arn, fakes, retry_sleeps, table)
