"""The real `imagejobs` console script against a moto server over HTTP (found via local-stack.json)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.jobcli.conftest import (
    CLI_TIMEOUT,
    LocalStack,
    cli_env,
    console_script,
    write_local_stack_file,
)
from tests.unit.jobcli.support import make_record, put_output

pytestmark = pytest.mark.integration


def _drain(stack: LocalStack) -> list[dict[str, Any]]:
    bodies = []
    while messages := stack.sqs.receive_message(
        QueueUrl=stack.resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            stack.sqs.delete_message(
                QueueUrl=stack.resources.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return bodies


def test_submit_status_list_watch_download_over_http(local_stack: LocalStack) -> None:
    # submit: one prompt (explicit --local) and a JSONL file with a bad line (local stack file as default).
    single = local_stack.run("submit", "a lighthouse", "--job-id", "one", "--local")
    assert single.returncode == 0, single.stderr
    assert single.stdout.split() == ["one"]
    (local_stack.cwd / "jobs.jsonl").write_text(
        "".join(json.dumps({"jobId": f"batch-{i:02d}", "prompt": f"p{i}"}) + "\n" for i in range(12))
        + "[1]\n"
    )
    batch = local_stack.run("submit", "--file", "jobs.jsonl")
    assert batch.returncode == 1
    assert batch.stdout.split() == [f"batch-{i:02d}" for i in range(12)]
    assert "jobs.jsonl:13: expected a JSON object, got list" in batch.stderr
    assert f"sent 12 jobs to local stack at {local_stack.endpoint_url}" in batch.stderr
    piped = local_stack.run("submit", "--file", "-", "--json", stdin='{"prompt": "from stdin"}\n')
    assert piped.returncode == 0, piped.stderr
    piped_id = json.loads(piped.stdout)["jobId"]
    assert sorted(body["jobId"] for body in _drain(local_stack)) == sorted(
        ["one", piped_id, *batch.stdout.split()]
    )

    # What the pipeline would record: one done with an output in S3, one rejected.
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    output = put_output(local_stack.s3, local_stack.resources.bucket_name, "outputs/one/0.png", png)
    local_stack.table.put_item(Item=make_record("one", "COMPLETED", outputs=[output], polls=2, minute=1))
    local_stack.table.put_item(
        Item=make_record(
            "batch-00",
            "REJECTED",
            error={"source": "validation", "message": "invalid", "fieldErrors": {"model": ["unknown model"]}},
        )
    )

    status = local_stack.run("status", "batch-00")
    assert status.returncode == 0, status.stderr
    assert "REJECTED" in status.stdout and "  model: unknown model" in status.stdout

    listed = local_stack.run("list", "--status", "COMPLETED", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [record["jobId"] for record in json.loads(listed.stdout)] == ["one"]

    watched = local_stack.run(
        "watch", "one", "batch-00", "--interval", "0.05", "--expect", "COMPLETED", "--expect", "REJECTED"
    )
    assert watched.returncode == 0, watched.stderr
    assert "one" in watched.stdout and "outputs/one/0.png" in watched.stdout

    downloaded = local_stack.run("download", "one", "batch-00", "--out", "dl")
    assert downloaded.returncode == 0, downloaded.stderr
    assert (local_stack.cwd / "dl" / "one" / "0.png").read_bytes() == png
    assert "sha256 ok" in downloaded.stdout
    assert "batch-00: skipped, no outputs (status REJECTED)" in downloaded.stderr


def test_watch_follows_a_record_to_completion(local_stack: LocalStack) -> None:
    local_stack.table.put_item(Item=make_record("live", "SUBMITTED", polls=1))
    process = local_stack.popen("watch", "live", "--interval", "0.05", "--timeout", "60")
    try:
        assert process.stderr is not None
        # Without a terminal the progress is plain lines; wait for the first one, then finish the job.
        first_line = process.stderr.readline()
        assert "live  SUBMITTED, 1 polls" in first_line
        local_stack.table.put_item(Item=make_record("live", "COMPLETED", polls=3))
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "live  COMPLETED, 3 polls" in stderr
    assert "1 job: 1 COMPLETED" in stderr
    assert stdout.splitlines()[1].split()[:2] == ["live", "COMPLETED"]


def test_stale_local_stack_file_fails_fast_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_local_stack_file(tmp_path, f"http://127.0.0.1:{port}", {"JobsTableName": "t"})

    result = subprocess.run(
        [console_script(), "status", "job-1"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
        timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip

    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"imagejobs: error: local stack endpoint http://127.0.0.1:{port} is not reachable "
        "(Connection refused): is `imagejobs local up` running?"
    )
