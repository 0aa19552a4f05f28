"""Start/stop of the local stack: nothing leaks (threads, port, environment, moto hooks, worker processes)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from imagejobs_tools.local import LocalStack, LocalStackError
from tests.integration.local.conftest import fixture_config

pytestmark = [pytest.mark.integration]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_no_threads_port_environment_or_hooks(tmp_path: Path) -> None:
    from moto import backends
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original_hook = LambdaFunction.__dict__["_invoke_lambda"]
    original_entrypoint = ExecutionWorker.__dict__["_get_evaluation_entrypoint"]
    original_listing = backends.list_of_moto_modules
    environ_before = dict(os.environ)
    threads_before = {t.ident for t in threading.enumerate() if not t.daemon}
    state_file = tmp_path / ".imagejobs" / "local-stack.json"

    stack = LocalStack(fixture_config(state_file=state_file))
    info = stack.start()
    port = int(info.endpoint_url.rsplit(":", 1)[1])
    assert _port_open(port)
    assert state_file.is_file() and info.endpoint_url in state_file.read_text()
    assert os.environ["AWS_ENDPOINT_URL"] == info.endpoint_url
    task = info.functions["TaskFunction"]
    stack.client("lambda").invoke(FunctionName=task, Payload=b'{"id": "lifecycle"}')
    (worker,) = stack.dispatcher.pools[task]._idle
    assert worker.alive
    assert any(t.name.startswith("imagejobs-sqs-poller") for t in threading.enumerate())
    assert ExecutionWorker.__dict__["_get_evaluation_entrypoint"] is not original_entrypoint
    stack.stop()

    assert not _port_open(port)
    assert not state_file.exists()
    assert LambdaFunction.__dict__["_invoke_lambda"] is original_hook
    assert ExecutionWorker.__dict__["_get_evaluation_entrypoint"] is original_entrypoint
    assert backends.list_of_moto_modules is original_listing
    assert worker.process.returncode is not None  # the execution environment is gone
    assert dict(os.environ) == environ_before
    assert not [t.name for t in threading.enumerate() if t.name.startswith("imagejobs-sqs-poller")]
    assert {t.ident for t in threading.enumerate() if not t.daemon} <= threads_before
    stack.stop()  # idempotent


def test_only_one_stack_per_process() -> None:
    with LocalStack(fixture_config()), pytest.raises(LocalStackError, match="already running"):
        LocalStack(fixture_config()).start()


def test_unknown_parameter_override_is_a_clear_error() -> None:
    with pytest.raises(LocalStackError, match="'NoSuchParameter'"):
        LocalStack(fixture_config(parameter_overrides={"NoSuchParameter": "1"})).start()


def test_missing_template_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="template not found"):
        LocalStack(fixture_config(template_path=tmp_path / "nope.yaml")).start()
