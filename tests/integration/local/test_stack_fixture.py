"""The local stack over the fixture template: dispatch, SQS semantics, Step Functions via the dispatcher."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from imagejobs_tools.local import LocalStack
from tests.integration.local.conftest import get_item, queue_depth, send, wait_for

pytestmark = [pytest.mark.integration]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def finished_execution(stack: LocalStack, name: str) -> dict:
    """Wait for the execution named `name` to exist and leave RUNNING."""
    sfn = stack.client("stepfunctions")
    arn = stack.info.outputs["StateMachineArn"].replace(":stateMachine:", ":execution:") + f":{name}"

    def done() -> dict | None:
        try:
            execution = sfn.describe_execution(executionArn=arn)
        except sfn.exceptions.ExecutionDoesNotExist:
            return None
        return execution if execution["status"] != "RUNNING" else None

    return wait_for(done)


def test_invoke_hook_is_installed_and_dispatches_to_the_handler(fixture_stack: LocalStack) -> None:
    # Smoke test of moto's private hook: if a moto upgrade moves it, this fails first.
    from moto.awslambda.models import LambdaFunction

    assert LambdaFunction._invoke_lambda.__module__ == "imagejobs_tools.local.dispatch"
    task = fixture_stack.info.functions["TaskFunction"]
    item_id = unique("direct")
    response = fixture_stack.client("lambda").invoke(
        FunctionName=task, Payload=json.dumps({"id": item_id, "wait": 0}).encode()
    )
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"id": item_id, "wait": 0, "done": True}
    item = get_item(fixture_stack, item_id)
    assert item is not None and item["status"] == "DONE"
    assert 0 < int(item["remainingMs"]) <= 2_000  # the template's Timeout for TaskFunction


def test_handler_exception_becomes_a_lambda_error_payload(fixture_stack: LocalStack) -> None:
    task = fixture_stack.info.functions["TaskFunction"]
    response = fixture_stack.client("lambda").invoke(
        FunctionName=task, Payload=json.dumps({"id": "x", "taskError": "boom"}).encode()
    )
    assert response["FunctionError"] == "Handled"
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "TaskError"
    assert payload["errorMessage"] == "boom"
    assert isinstance(payload["stackTrace"], list) and payload["stackTrace"]


def test_each_function_runs_in_its_own_warm_process_with_its_own_environment(
    fixture_stack: LocalStack,
) -> None:
    item_id = unique("env")
    send(fixture_stack, {"id": item_id, "mode": "ok"})
    item = wait_for(lambda: (i := get_item(fixture_stack, item_id)) and i["status"] == "DONE" and i)
    intake_pid, task_pid = int(item["pid"]), int(item["taskPid"])
    assert len({intake_pid, task_pid, os.getpid()}) == 3
    assert item["loadedAs"] == fixture_stack.info.functions["IntakeFunction"]  # set before the import
    assert item["taskOnlySeen"] is False  # TaskFunction's own variable stays TaskFunction's
    assert item["taskEnv"] == "task"
    # Warm: the next invocation of the function reuses the idle environment.
    task = fixture_stack.info.functions["TaskFunction"]
    again = unique("warm")
    fixture_stack.client("lambda").invoke(FunctionName=task, Payload=json.dumps({"id": again}).encode())
    assert int(get_item(fixture_stack, again)["taskPid"]) in {
        w.process.pid for w in fixture_stack.dispatcher.pools[task]._idle
    }


def test_a_task_past_its_timeout_fails_as_sandbox_timedout_for_the_state_machine(
    fixture_stack: LocalStack,
) -> None:
    task = fixture_stack.info.functions["TaskFunction"]
    timeouts_before = fixture_stack.dispatcher.pools[task].stats.timeouts
    item_id = unique("timeout")
    send(fixture_stack, {"id": item_id, "mode": "ok", "taskSleep": 5})
    wait_for(lambda: get_item(fixture_stack, item_id))
    execution = finished_execution(fixture_stack, item_id)
    assert execution["status"] == "FAILED" and execution["error"] == "TaskFailed"
    history = fixture_stack.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"]
    )
    (failed,) = [e["taskFailedEventDetails"] for e in history["events"] if e["type"] == "TaskFailed"]
    assert failed["error"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in failed["cause"]
    assert fixture_stack.dispatcher.pools[task].stats.timeouts == timeouts_before + 1
    assert any(
        line.logical_id == "TaskFunction" and "Task timed out after 2.00 seconds" in line.text
        for line in fixture_stack.function_logs
    )


@pytest.mark.parametrize("mode", ["hang_once", "die_once"])
def test_a_batch_whose_invocation_times_out_or_dies_is_not_deleted_and_comes_back(
    fixture_stack: LocalStack, mode: str
) -> None:
    intake = fixture_stack.info.functions["IntakeFunction"]
    stats = fixture_stack.dispatcher.pools[intake].stats
    before = (stats.timeouts, stats.exits)
    item_id = unique(mode)
    send(fixture_stack, {"id": item_id, "mode": mode})
    item = wait_for(lambda: get_item(fixture_stack, item_id), timeout=30)
    assert item["receiveCount"] == "2"  # the failed receive left the message on the queue
    expected = (before[0] + 1, before[1]) if mode == "hang_once" else (before[0], before[1] + 1)
    # The queue's visibility (2 s) is shorter than the Timeout (3 s): the retry may finish first.
    wait_for(lambda: (stats.timeouts, stats.exits) == expected, timeout=10)


def test_log_lines_carry_their_own_function_and_request(fixture_stack: LocalStack) -> None:
    task = fixture_stack.info.functions["TaskFunction"]
    response = fixture_stack.client("lambda").invoke(
        FunctionName=task, Payload=json.dumps({"id": "x", "taskError": "logged boom"}).encode()
    )
    assert response["FunctionError"] == "Handled"
    lines = [line for line in list(fixture_stack.function_logs) if "logged boom" in line.text]
    assert lines and all(line.logical_id == "TaskFunction" and line.function_name == task for line in lines)
    (request_id,) = {line.request_id for line in lines}
    assert request_id is not None
    report = [
        line
        for line in list(fixture_stack.function_logs)
        if line.text.startswith(f"REPORT RequestId: {request_id}")
    ]
    assert report and "Memory Size: 256 MB" in report[0].text


def test_message_flows_through_queue_function_and_state_machine(fixture_stack: LocalStack) -> None:
    item_id = unique("ok")
    send(fixture_stack, {"id": item_id, "mode": "ok"})
    item = wait_for(lambda: (i := get_item(fixture_stack, item_id)) and i["status"] == "DONE" and i)
    assert item["functionName"] == fixture_stack.info.functions["IntakeFunction"]
    assert item["greeting"] == "hello"  # a template parameter default, through Globals
    body = (
        fixture_stack.client("s3")
        .get_object(Bucket=fixture_stack.info.outputs["OutputBucketName"], Key=f"outputs/{item_id}.txt")[
            "Body"
        ]
        .read()
    )
    assert body == b"done"
    sfn = fixture_stack.client("stepfunctions")
    arn = (
        fixture_stack.info.outputs["StateMachineArn"].replace(":stateMachine:", ":execution:") + f":{item_id}"
    )
    execution = wait_for(lambda: (e := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and e)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["done"] is True
    events = [e["type"] for e in sfn.get_execution_history(executionArn=arn)["events"]]
    assert "WaitStateEntered" in events and "TaskSucceeded" in events


def test_task_error_type_reaches_the_state_machine_catch(fixture_stack: LocalStack) -> None:
    item_id = unique("taskerr")
    send(fixture_stack, {"id": item_id, "mode": "ok", "taskError": "provider exploded"})
    sfn = fixture_stack.client("stepfunctions")
    wait_for(lambda: get_item(fixture_stack, item_id))
    # The item is written before the execution starts: wait for it to exist, then to finish.
    execution = finished_execution(fixture_stack, item_id)
    arn = execution["executionArn"]
    assert execution["status"] == "FAILED"
    assert execution["error"] == "TaskFailed"  # the Fail state reached through Catch
    history = sfn.get_execution_history(executionArn=arn)["events"]
    failed = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    assert failed and failed[0]["error"] == "TaskError"


def test_batch_item_failure_is_redelivered_and_the_rest_deleted(fixture_stack: LocalStack) -> None:
    ok_id, flaky_id = unique("ok"), unique("flaky")
    send(fixture_stack, {"id": ok_id, "mode": "ok"}, {"id": flaky_id, "mode": "fail_once"})
    ok_item = wait_for(lambda: get_item(fixture_stack, ok_id))
    assert ok_item["receiveCount"] == "1"  # deleted after its first success: never seen again
    # Reported as a batch item failure: comes back after the queue's visibility timeout (2 s).
    flaky_item = wait_for(lambda: get_item(fixture_stack, flaky_id), timeout=20)
    assert flaky_item["receiveCount"] == "2"
    wait_for(lambda: queue_depth(fixture_stack, "ItemsQueueUrl") == 0)
    assert get_item(fixture_stack, ok_id)["receiveCount"] == "1"
    assert queue_depth(fixture_stack, "ItemsDeadLetterQueueUrl") == 0


def test_function_error_never_deletes_and_the_queue_redrives_to_the_dlq(fixture_stack: LocalStack) -> None:
    poison_id = unique("poison")
    send(fixture_stack, {"id": poison_id, "mode": "raise"})
    sqs = fixture_stack.client("sqs")
    dlq = fixture_stack.info.outputs["ItemsDeadLetterQueueUrl"]

    def dead_letters() -> list[dict]:
        return sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )

    messages = wait_for(dead_letters, timeout=30)
    assert [json.loads(m["Body"])["id"] for m in messages] == [poison_id]
    assert get_item(fixture_stack, poison_id) is None
    for message in messages:
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])


def test_scaling_config_bounds_concurrent_invocations(fixture_stack: LocalStack) -> None:
    intake = fixture_stack.info.functions["IntakeFunction"]
    (poller,) = [p for p in fixture_stack.pollers if p.mapping.function_name == intake]
    assert poller.mapping.batch_size == 5
    assert poller.mapping.report_batch_item_failures is True
    ids = [unique("slow") for _ in range(20)]  # at least 4 batches of <= 5 for 2 pollers
    send(fixture_stack, *({"id": i, "mode": "slow"} for i in ids[:10]))
    send(fixture_stack, *({"id": i, "mode": "slow"} for i in ids[10:]))
    items = [wait_for(lambda i=i: get_item(fixture_stack, i)) for i in ids]
    # ScalingConfig.MaximumConcurrency is 2 in the fixture template: reached, never exceeded.
    assert fixture_stack.dispatcher.pools[intake].stats.peak == 2
    assert len({item["pid"] for item in items}) <= 2


def test_outputs_point_at_the_local_endpoint(fixture_stack: LocalStack) -> None:
    info = fixture_stack.info
    assert info.outputs["ItemsQueueUrl"].startswith(info.endpoint_url + "/123456789012/")
    assert not any(key.startswith("ZzLocal") for key in info.outputs)
    secret = fixture_stack.client("secretsmanager").get_secret_value(SecretId=info.resources["ApiKeySecret"])
    assert secret["SecretString"] == "placeholder"  # no provider configured: left as the template says


def test_s3_upload_reaches_the_function_as_an_s3_event(fixture_stack: LocalStack) -> None:
    bucket = fixture_stack.info.outputs["OutputBucketName"]
    s3 = fixture_stack.client("s3")
    key = f"inputs/{unique('batch')}/job file.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    s3.put_object(Bucket=bucket, Key="elsewhere/ignored.json", Body=b"{}")  # outside the prefix filter
    item = wait_for(lambda: get_item(fixture_stack, key))
    assert item["status"] == "UPLOADED"
    assert item["event"].startswith("ObjectCreated:")
    assert get_item(fixture_stack, "elsewhere/ignored.json") is None


def test_step_functions_reuses_one_lambda_client(fixture_stack: LocalStack) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    first = lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda")
    second = lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda")
    assert first is second
    assert first.meta.endpoint_url == fixture_stack.info.endpoint_url.replace("127.0.0.1", "localhost")


def test_step_functions_lambda_client_invokes_in_process_with_invoke_api_answers(
    fixture_stack: LocalStack,
) -> None:
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    from imagejobs_tools.local.observe import AwsCallCounts, count_aws_calls

    client = lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda")
    task = fixture_stack.info.functions["TaskFunction"]
    arn = fixture_stack.dispatcher.functions[task].arn
    item_id = unique("in-process")
    # Everything but the pollers' calls (their functions' keys): the interpreter's own included.
    pollers = {
        fixture_stack.iam_audit.credentials_for(f)["AWS_ACCESS_KEY_ID"] for f in fixture_stack.info.functions
    }
    with count_aws_calls(fixture_stack, AwsCallCounts(excluded_keys=pollers)) as counts:
        ok = client.invoke(FunctionName=arn, Payload=json.dumps({"id": item_id, "wait": 0}).encode())
        boom = json.dumps({"id": "x", "taskError": "boom"}).encode()
        failed = client.invoke(FunctionName=task, Payload=boom)
    assert "lambda.Invoke" not in counts.counts  # no loopback HTTP round trip
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"id": item_id, "wait": 0, "done": True}
    assert failed["FunctionError"] == "Handled"
    assert json.loads(failed["Payload"].read())["errorType"] == "TaskError"
    # What the in-process path cannot answer goes to the real API, with its real error.
    with pytest.raises(ClientError) as unknown:
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"
