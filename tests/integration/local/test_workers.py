"""Execution environments without a stack: init failures, warm reuse, the concurrency bound."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from imagejobs_tools.local.logview import FunctionLogLine
from imagejobs_tools.local.workers import FunctionSpec, WorkerOptions, WorkerPool

pytestmark = pytest.mark.integration

HANDLER = """
import os, time
if os.environ.get("INIT") == "raise":
    raise ValueError("bad setting X")
if os.environ.get("INIT") == "exit":
    os._exit(3)
LOADED = os.getpid()

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    print("handling", context.aws_request_id)
    return {"pid": LOADED, "remainingMs": context.get_remaining_time_in_millis()}
"""


def pool(tmp_path: Path, lines: list[FunctionLogLine], max_concurrency: int = 1, **env: str) -> WorkerPool:
    (tmp_path / "app.py").write_text(HANDLER)
    environment = {
        "PATH": "/usr/bin:/bin",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "_HANDLER": "app.lambda_handler",
        "AWS_LAMBDA_FUNCTION_NAME": "probe",
        **env,
    }
    spec = FunctionSpec(
        "Probe", "probe", "arn:probe", "app.lambda_handler", tmp_path, 128, 3, environment, max_concurrency
    )
    return WorkerPool(spec, WorkerOptions(), lines.append)


def test_an_init_that_raises_fails_the_invocation_with_its_error_and_starts_afresh_next_time(
    tmp_path: Path,
) -> None:
    lines: list[FunctionLogLine] = []
    probe = pool(tmp_path, lines, INIT="raise")
    try:
        for _ in range(2):
            payload, errored = probe.invoke("{}")
            assert errored and json.loads(payload)["errorType"] == "ValueError"
        assert probe.stats.init_errors == 2 and probe.size == 0
        assert any("bad setting X" in line.text and line.request_id is None for line in lines)
    finally:
        probe.close()


def test_an_init_that_exits_fails_as_an_exited_runtime(tmp_path: Path) -> None:
    probe = pool(tmp_path, [], INIT="exit")
    try:
        payload, errored = probe.invoke("{}")
    finally:
        probe.close()
    assert errored
    assert json.loads(payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": "RequestId: init Error: Runtime exited with error: exit status 3",
    }


def test_a_warm_environment_is_reused_and_the_pool_never_exceeds_its_concurrency(tmp_path: Path) -> None:
    lines: list[FunctionLogLine] = []
    probe = pool(tmp_path, lines, max_concurrency=2)
    results: list[dict] = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(json.loads(probe.invoke('{"sleep": 0.3}')[0])))
            for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 5
        assert len({r["pid"] for r in results}) == 2  # five invocations, two environments
        assert probe.stats.started == 2 and probe.stats.peak == 2
        assert all(0 < r["remainingMs"] <= 3000 for r in results)
        cold = [line for line in lines if line.text.startswith("REPORT") and "Init Duration" in line.text]
        assert len(cold) == 2
        handled = [line for line in lines if line.text.startswith("handling ")]
        assert all(line.text == f"handling {line.request_id}" for line in handled) and len(handled) == 5
    finally:
        probe.close()
    assert probe.invoke("{}")[1]  # a closed pool refuses


def test_an_environment_update_replaces_warm_environments_and_a_busy_one_retires(tmp_path: Path) -> None:
    probe = pool(tmp_path, [], max_concurrency=2)
    try:
        first = json.loads(probe.invoke("{}")[0])["pid"]
        probe.update_environment({"FLAG": "on"})
        assert probe.size == 0  # the idle one is shut down
        second = json.loads(probe.invoke("{}")[0])["pid"]
        assert second != first and probe.spec.environment["FLAG"] == "on"
        busy = threading.Thread(target=probe.invoke, args=(json.dumps({"sleep": 2.0}),))
        busy.start()
        time.sleep(0.5)  # it has taken the warm environment (a pop from the idle list)
        probe.update_environment({"FLAG": "off"})
        assert probe.size == 1  # still running its invocation
        busy.join()
        assert probe.size == 0  # retired when done, never reused
        assert json.loads(probe.invoke("{}")[0])["pid"] not in (first, second)
    finally:
        probe.close()
