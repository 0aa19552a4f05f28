from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imagejobs_tools.cli import main
from imagejobs_tools.jobcli.target import Target, TargetError, TargetOptions, resolve_target

REGION = "us-east-1"

STACK_TEMPLATE = {
    "Resources": {"JobsQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "cfn-jobs"}}},
    "Outputs": {
        "JobsQueueUrl": {"Value": {"Ref": "JobsQueue"}},
        "JobsTableName": {"Value": "cfn-jobs-table"},
        "OutputBucketName": {"Value": "cfn-outputs"},
        "StateMachineArn": {"Value": "arn:aws:states:us-east-1:123456789012:stateMachine:jobs"},
    },
}


def write_local_stack(directory: Path, endpoint_url: str = "http://127.0.0.1:45678", **outputs: str) -> Path:
    path = directory / ".imagejobs" / "local-stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    default_outputs = {
        "JobsQueueUrl": f"{endpoint_url}/123456789012/local-jobs",
        "JobsTableName": "local-jobs",
        "OutputBucketName": "local-outputs",
    }
    path.write_text(
        json.dumps(
            {"endpointUrl": endpoint_url, "region": "eu-west-1", "simulatorUrl": "http://127.0.0.1:1",
             "outputs": {**default_outputs, **outputs}}
        )
    )  # fmt: skip
    return path


def resolve(tmp_path: Path, environ: dict[str, str] | None = None, **options: Any) -> Target:
    return resolve_target(
        TargetOptions(**options), cwd=tmp_path, environ=environ or {}, check_reachable=False
    )


def test_stack_outputs_are_read_from_cloudformation(tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="imagejobs-prod", TemplateBody=json.dumps(STACK_TEMPLATE)
        )
        target = resolve(tmp_path, stack_name="imagejobs-prod", region=REGION)

    assert target.queue_url and target.queue_url.endswith("/cfn-jobs")
    assert target.table_name == "cfn-jobs-table"
    assert target.bucket_name == "cfn-outputs"
    assert target.outputs["StateMachineArn"].endswith(":stateMachine:jobs")
    assert target.region == REGION and target.endpoint_url is None and not target.is_local
    assert target.description == f"stack 'imagejobs-prod' ({REGION})"


def test_explicit_resources_override_stack_outputs(tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="s", TemplateBody=json.dumps(STACK_TEMPLATE)
        )
        target = resolve(tmp_path, stack_name="s", region=REGION, table_name="override-table")
    assert target.table_name == "override-table" and target.bucket_name == "cfn-outputs"


def test_missing_stack_is_a_clear_error(tmp_path: Path) -> None:
    with mock_aws(), pytest.raises(TargetError) as excinfo:
        resolve(tmp_path, stack_name="no-such-stack", region="eu-west-1")
    assert str(excinfo.value) == (
        "stack 'no-such-stack' does not exist in region eu-west-1 (check --stack-name and --region)"
    )


def test_missing_outputs_name_the_output_and_the_flag(tmp_path: Path) -> None:
    template = {**STACK_TEMPLATE, "Outputs": {"JobsQueueUrl": {"Value": {"Ref": "JobsQueue"}}}}
    with mock_aws():
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="partial", TemplateBody=json.dumps(template)
        )
        target = resolve(tmp_path, stack_name="partial", region=REGION)
    assert target.require_queue_url().endswith("/cfn-jobs")
    with pytest.raises(
        TargetError, match=r"stack 'partial' \(us-east-1\) has no output JobsTableName: pass --table"
    ):
        target.require_table_name()


def test_stack_without_any_outputs_is_reported(tmp_path: Path) -> None:
    template = {"Resources": STACK_TEMPLATE["Resources"]}
    with mock_aws():
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="bare", TemplateBody=json.dumps(template)
        )
        with pytest.raises(TargetError, match=r"stack 'bare' .* has no outputs"):
            resolve(tmp_path, stack_name="bare", region=REGION)


def test_no_credentials_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with pytest.raises(TargetError, match="no AWS credentials found while reading stack 'prod'"):
        resolve(tmp_path, stack_name="prod", region=REGION)


def test_no_region_and_a_malformed_region_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(
        TargetError, match="no AWS region while reading stack 'prod': pass --region or set AWS_REGION"
    ):
        resolve(tmp_path, stack_name="prod")
    with pytest.raises(TargetError, match="--region 'us east 1' is not an AWS region name"):
        resolve(tmp_path, stack_name="prod", region="us east 1")


def test_unknown_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="AWS profile not found: nobody"):
        resolve(tmp_path, stack_name="prod", region=REGION, profile="nobody")


def test_no_target_at_all(tmp_path: Path) -> None:
    with pytest.raises(
        TargetError, match=r"no target: no \.imagejobs/local-stack\.json in .*imagejobs local up"
    ):
        resolve(tmp_path)


def test_local_flag_without_a_local_stack_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"no local stack: .*local-stack.json does not exist"):
        resolve(tmp_path, local=True)
    with pytest.raises(TargetError, match="no local stack"):
        resolve(tmp_path, environ={"IMAGEJOBS_LOCAL": "1"})


def test_local_stack_file_is_the_default_when_present(tmp_path: Path) -> None:
    write_local_stack(tmp_path)

    target = resolve(tmp_path)

    assert target.is_local and target.endpoint_url == "http://127.0.0.1:45678"
    assert target.region == "eu-west-1"
    assert target.table_name == "local-jobs" and target.bucket_name == "local-outputs"
    assert target.description == "local stack at http://127.0.0.1:45678"
    # A local target never uses the user's AWS credentials.
    credentials = target.session().get_credentials()
    assert credentials is not None and credentials.access_key == "imagejobs-local"


def test_stack_name_wins_over_a_local_file_but_not_with_local(tmp_path: Path) -> None:
    write_local_stack(tmp_path)
    with mock_aws(), pytest.raises(TargetError, match="stack 'remote' does not exist"):
        resolve(tmp_path, stack_name="remote", region=REGION)
    with pytest.raises(TargetError, match=r"use either --local .* or --stack-name, not both"):
        resolve(tmp_path, stack_name="remote", local=True)


def test_broken_local_stack_files(tmp_path: Path) -> None:
    path = write_local_stack(tmp_path)
    path.write_text("{oops")
    with pytest.raises(TargetError, match=r"local-stack.json: cannot read the local stack file"):
        resolve(tmp_path, local=True)
    path.write_text(json.dumps({"endpointUrl": "127.0.0.1:80"}))
    with pytest.raises(TargetError, match=r"endpointUrl must be an http\(s\) URL, got '127.0.0.1:80'"):
        resolve(tmp_path, local=True)


def test_unreachable_local_endpoint_asks_whether_local_up_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_local_stack(tmp_path, endpoint_url="http://127.0.0.1:45678")
    attempts: list[tuple[str, int]] = []

    def refuse(address: tuple[str, int], timeout: float) -> socket.socket:
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)

    with pytest.raises(TargetError) as excinfo:
        resolve_target(TargetOptions(local=True), cwd=tmp_path, environ={})

    assert attempts == [("127.0.0.1", 45678)]
    assert str(excinfo.value) == (
        "local stack endpoint http://127.0.0.1:45678 is not reachable (Connection refused): "
        "is `imagejobs local up` running?"
    )


def test_target_errors_exit_3_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "job-1"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("imagejobs: error: no target:") and err.count("\n") == 1

    with mock_aws():
        assert main(["list", "--stack-name", "missing", "--region", REGION]) == 3
    assert "stack 'missing' does not exist in region us-east-1" in capsys.readouterr().err


def test_aws_errors_from_commands_exit_3_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        assert main(["status", "j", "--table", "no-such-table", "--region", REGION]) == 3
    err = capsys.readouterr().err
    assert err.startswith(
        "imagejobs: error: imagejobs status failed: resource not found (ResourceNotFoundException)"
    )
    assert err.count("\n") == 1


def test_stack_name_from_the_environment(tmp_path: Path) -> None:
    with mock_aws(), pytest.raises(TargetError, match="stack 'from-env' does not exist"):
        resolve(tmp_path, environ={"IMAGEJOBS_STACK_NAME": "from-env"}, region=REGION)


def test_unreachable_aws_endpoint_hints_at_the_region() -> None:
    import botocore.exceptions

    from imagejobs_tools.jobcli.target import describe_aws_error

    error = botocore.exceptions.EndpointConnectionError(
        endpoint_url="https://cloudformation.xx-nowhere-1.amazonaws.com/"
    )
    message = describe_aws_error(error, "reading stack 'prod'")
    assert message.startswith(
        "cannot connect while reading stack 'prod': Could not connect to the endpoint URL"
    )
    assert message.endswith("(wrong --region, or no network?)")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_endpoint_url_fails_at_once_naming_it(tmp_path: Path) -> None:
    port = _closed_port()
    options = TargetOptions(table_name="jobs", endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TargetError) as excinfo:
        resolve_target(options, cwd=tmp_path, environ={})
    assert str(excinfo.value) == (
        f"endpoint (--endpoint-url / AWS_ENDPOINT_URL) http://127.0.0.1:{port} is not reachable "
        "(Connection refused): is `imagejobs local up` running?"
    )


def test_aws_endpoint_url_points_the_cli_at_a_stack_with_short_retries(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        # A state file for another stack here: the explicit endpoint wins over it.
        write_local_stack(tmp_path, endpoint_url="http://127.0.0.1:45678")
        target = resolve_target(
            TargetOptions(table_name="jobs"), cwd=tmp_path, environ={"AWS_ENDPOINT_URL": url}
        )
    assert (target.endpoint_url, target.table_name, target.is_local) == (url, "jobs", False)
    config = target.client_config()
    assert config.connect_timeout == 2 and config.retries == {"mode": "standard", "max_attempts": 3}


def test_list_against_an_unreachable_endpoint_exits_3_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    assert main(["list", "--table", "jobs", "--endpoint-url", f"http://127.0.0.1:{port}"]) == 3
    assert capsys.readouterr().err.strip() == (
        f"imagejobs: error: endpoint (--endpoint-url / AWS_ENDPOINT_URL) http://127.0.0.1:{port} "
        "is not reachable (Connection refused): is `imagejobs local up` running?"
    )
