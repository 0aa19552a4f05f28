"""`imagejobs local up --lambda sam`: the whole pipeline with every invocation in a Lambda container."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import RunningStack, wait_for

# The stack's start (sam build, five warm containers) counts against the first test's timeout: about a
# minute on a quiet machine, several at a load of 10+.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("samlocal"), pytest.mark.timeout(600)]


def served_by_start_lambda(stack: RunningStack, function: str) -> bool:
    """Whether start-lambda served an invocation of `function`: its request line is in the log. It
    writes that line once the response is sent, so after the function's own effects: waited for."""
    line = f"POST /2015-03-31/functions/{function}/invocations"
    return bool(wait_for(lambda: line in stack.log_path.read_text(errors="replace"), 30, what=line))


def test_a_job_goes_from_the_queue_to_completed_with_its_image_in_s3(sam_stack: RunningStack) -> None:
    sam_stack.send({"jobId": "samlocal-e2e", "prompt": "a lighthouse at dawn", "aspectRatio": "16:9"})

    record = sam_stack.wait_terminal("samlocal-e2e", timeout=180)

    assert record["status"] == "COMPLETED"
    s3 = sam_stack.client("s3")
    [output] = record["outputs"]
    assert (
        s3.head_object(Bucket=sam_stack.outputs["OutputBucketName"], Key=output["key"])["ContentLength"] > 0
    )
    for function in ("IntakeFunction", "PollFunction", "StoreOutputsFunction"):
        assert served_by_start_lambda(sam_stack, function), function


def test_a_jsonl_batch_upload_becomes_completed_jobs_and_a_report(sam_stack: RunningStack) -> None:
    bucket = sam_stack.outputs["OutputBucketName"]
    key = f"{sam_stack.outputs['BatchesPrefix']}samlocal/catalog.jsonl"
    lines = [{"jobId": f"samlocal-line-{n}", "prompt": f"a lighthouse, study {n}"} for n in range(2)]
    s3 = sam_stack.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(line) + "\n" for line in lines).encode())

    records = [sam_stack.wait_terminal(line["jobId"], timeout=180) for line in lines]

    assert [record["status"] for record in records] == ["COMPLETED", "COMPLETED"]
    # Written once every line is on the jobs queue, so before the jobs end.
    report = json.load(s3.get_object(Bucket=bucket, Key=f"{key}.report.json")["Body"])
    assert report["status"] == "COMPLETE" and report["lines"] == 2
    assert served_by_start_lambda(sam_stack, "S3IntakeFunction")
