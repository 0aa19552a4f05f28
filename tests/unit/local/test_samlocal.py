"""`sam local`'s pieces that need no Docker: the env-vars document, `local sam-env`'s refusals, and the
dispatcher sending a function's invocations to other execution environments (tests/samlocal run them
for real)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools import cli
from imagejobs_tools.local import samlocal
from imagejobs_tools.local.dispatch import LambdaDispatcher
from imagejobs_tools.local.samlocal import sam_env_document
from imagejobs_tools.local.workers import FunctionSpec, InvocationOutcome


class FakeCloudFormation:
    def __init__(self, resources: list[dict[str, str]]) -> None:
        self.resources = resources

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_stack_resources"
        resources = self.resources

        class Paginator:
            def paginate(self, StackName: str) -> list[dict[str, Any]]:
                assert StackName == "imagejobs-local"
                return [{"StackResourceSummaries": resources[:1]}, {"StackResourceSummaries": resources[1:]}]

        return Paginator()


class FakeLambda:
    def __init__(self, variables: dict[str, dict[str, str]]) -> None:
        self.variables = variables

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:
        return {"FunctionName": FunctionName, "Environment": {"Variables": self.variables[FunctionName]}}


def test_the_env_vars_document_is_each_functions_resolved_environment_pointed_at_the_stack() -> None:
    function, table = "AWS::Lambda::Function", "AWS::DynamoDB::Table"
    cfn = FakeCloudFormation(
        [
            {"LogicalResourceId": "PollFunction", "PhysicalResourceId": "poll-1", "ResourceType": function},
            {"LogicalResourceId": "JobsTable", "PhysicalResourceId": "jobs-1", "ResourceType": table},
            {
                "LogicalResourceId": "FinalizeFunction",
                "PhysicalResourceId": "fin-1",
                "ResourceType": function,
            },
        ]
    )
    lambda_client = FakeLambda(
        {"poll-1": {"PROVIDER_BASE_URL": "http://172.31.250.1:9000"}, "fin-1": {"JOBS_TABLE": "jobs-1"}}
    )

    document = sam_env_document(lambda_client, cfn, "imagejobs-local", "http://172.31.250.1:4566")

    assert document == {
        "FinalizeFunction": {"JOBS_TABLE": "jobs-1", "AWS_ENDPOINT_URL": "http://172.31.250.1:4566"},
        "PollFunction": {
            "PROVIDER_BASE_URL": "http://172.31.250.1:9000",
            "AWS_ENDPOINT_URL": "http://172.31.250.1:4566",
        },
    }


def _sam_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: dict[str, Any] | None
) -> tuple[int, str]:
    state_file = tmp_path / "local-stack.json"
    if state is not None:
        state_file.write_text(json.dumps(state), encoding="utf-8")
    out = tmp_path / "sam-env.json"
    code = cli.main(["local", "sam-env", "--state-file", str(state_file), "--out", str(out)])
    assert not out.exists()
    return code, capsys.readouterr().err


def test_sam_env_refuses_a_stack_that_containers_cannot_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"endpointUrl": "http://127.0.0.1:4566", "region": "us-east-1", "stackName": "imagejobs-local"}
    code, err = _sam_env(tmp_path, capsys, state)

    assert code == 2
    assert "which containers cannot reach" in err and "--lambda sam" in err


def test_sam_env_without_a_running_stack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _sam_env(tmp_path, capsys, None)

    assert code == 2 and "no running local stack" in err


class RecordingEnvironments:
    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.events: list[str] = []
        self.closed = False

    def invoke(self, event: str) -> InvocationOutcome:
        self.events.append(event)
        return json.dumps({"ok": True}), False

    def close(self) -> None:
        self.closed = True


def test_a_registered_function_runs_in_the_environments_it_was_given(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return event\n")
    spec = FunctionSpec("Probe", "probe", "arn:probe", "app.lambda_handler", tmp_path, 128, 3, {}, 1)
    environments = RecordingEnvironments(spec)
    dispatcher = LambdaDispatcher()
    dispatcher.register(spec, environments)

    assert dispatcher.invoke("probe", {"n": 1}) == ('{"ok": true}', False, "")
    assert environments.events == ['{"n": 1}']
    assert dispatcher.functions == {"probe": spec}
    assert dispatcher.pools == {}  # no worker processes: nothing for their statistics
    dispatcher.close()
    assert environments.closed


def test_a_build_of_unchanged_inputs_is_not_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sam build empties its build dir first: a second build would pull the artifacts from under
    a running sam local invoke or start-lambda."""
    from imagejobs_tools.local import samlocal

    template = tmp_path / "template.yaml"
    template.write_text("Resources: {}\n")
    (tmp_path / "functions" / "poll").mkdir(parents=True)
    (tmp_path / "functions" / "poll" / "app.py").write_text("x = 1\n")
    builds: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        builds.append(command)
        built = tmp_path / samlocal.BUILD_DIR
        built.mkdir(parents=True, exist_ok=True)
        (built / "template.yaml").write_text("built\n")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(samlocal.subprocess, "run", fake_run)
    monkeypatch.setattr(samlocal, "sam_executable", lambda: "sam")
    first = samlocal.build(template, "x86_64")
    assert samlocal.build(template, "x86_64") == first and len(builds) == 1
    (tmp_path / "functions" / "poll" / "app.py").write_text("x = 2\n")  # changed code: built again
    samlocal.build(template, "x86_64")
    samlocal.build(template, "arm64")  # another architecture: built again
    assert len(builds) == 3


def test_sam_waits_longer_than_its_default_for_a_new_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAM_CLI_CONTAINER_CONNECTION_TIMEOUT", raising=False)
    assert samlocal.sam_environment()["SAM_CLI_CONTAINER_CONNECTION_TIMEOUT"] == "120"
    assert samlocal.sam_environment()["SAM_CLI_TELEMETRY"] == "0"

    monkeypatch.setenv("SAM_CLI_CONTAINER_CONNECTION_TIMEOUT", "45")
    assert samlocal.sam_environment()["SAM_CLI_CONTAINER_CONNECTION_TIMEOUT"] == "45"
