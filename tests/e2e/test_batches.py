"""Batches end to end (docs/batches.md): a JSONL upload → jobs and REJECTED lines → the batch's
results file and summary beside it, once → "Batch Completed" on the stack's bus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from imagejobs_tools.reliability.stacksuites import Harness, running_stack
from tests.e2e.conftest import TERMINAL, wait_for
from tests.e2e.test_events import Subscriber

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LINES = [
    json.dumps({"jobId": "sku-1001", "prompt": "a red kite", "aspectRatio": "1:1"}),
    json.dumps({"prompt": "a kite that fails", "providerInput": {"simFailCode": "EMPTY_RESULT"}}),
    "",
    json.dumps({"prompt": "   "}),
    "{not json",
    json.dumps({"prompt": "a blue kite", "providerInput": {"simOutputCount": 2}}),
]


# S3IntakeFunction's Timeout, under the 30 s a batch keeps in hand: it pauses at its first empty
# send buffer (every 10 lines) and resumes in a new invocation, as a batch outlasting 15 minutes
# does on AWS. The six-line batch below never empties its buffer before its end.
INTAKE_TIMEOUT_SECONDS = 20


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with running_stack("sk_test_batches", timeouts={"S3IntakeFunction": INTAKE_TIMEOUT_SECONDS}) as h:
        yield h


def read_json(h: Harness, key: str) -> Any:
    try:
        body = h.s3.get_object(Bucket=h.outputs["OutputBucketName"], Key=key)["Body"].read()
    except h.s3.exceptions.NoSuchKey:
        return None
    return json.loads(body) if key.endswith(".json") else [json.loads(line) for line in body.splitlines()]


def test_an_uploaded_batch_gets_its_results_and_summary_once_and_a_completion_event(harness: Harness) -> None:
    h = harness
    subscriber = Subscriber(h)
    bucket, prefix = h.outputs["OutputBucketName"], h.outputs["BatchesPrefix"]
    h.s3.put_object(Bucket=bucket, Key=f"{prefix}kites.jsonl", Body="\n".join(LINES).encode() + b"\n")

    summary = wait_for(lambda: read_json(h, f"{prefix}kites.summary.json"), 120, what="the batch's summary")
    results = read_json(h, f"{prefix}kites.results.jsonl")
    records = h.records()
    # One results line per line that is not blank, in input order, saying what its record says.
    assert [r["line"] for r in results] == [1, 2, 4, 5, 6]
    for line in results:
        record = records[line["jobId"]]
        assert record["status"] == line["status"] and record["status"] in TERMINAL
        assert int(record["batchLine"]) == line["line"]
        assert line["outputs"] == [o["key"] for o in record.get("outputs") or []]
    by_line = {r["line"]: r for r in results}
    assert by_line[1]["jobId"] == "sku-1001" and by_line[1]["status"] == "COMPLETED"
    assert by_line[2]["status"] == "FAILED" and by_line[2]["error"]["code"] == "EMPTY_RESULT"
    assert by_line[4]["status"] == "REJECTED" and "prompt" in by_line[4]["error"]["fieldErrors"]
    assert by_line[5]["status"] == "REJECTED" and "body" in by_line[5]["error"]["fieldErrors"]
    assert len(by_line[6]["outputs"]) == 2
    assert summary["jobs"] == 5 and summary["byStatus"] == {"COMPLETED": 2, "FAILED": 1, "REJECTED": 2}
    assert summary["creditsSpent"] == summary["creditsUsed"] - summary["creditsRefunded"]
    assert summary["creditsUsed"] == sum(int(records[r["jobId"]].get("creditsUsed") or 0) for r in results)

    def completions() -> list[dict[str, Any]]:
        return [e["detail"] for e in subscriber.events() if e["detail-type"] == "Batch Completed"]

    [event] = wait_for(completions, 60, what="Batch Completed")
    assert event["batchId"] == records["sku-1001"]["batchId"]
    assert event["results"] == {"bucket": bucket, "key": f"{prefix}kites.results.jsonl"}
    assert event["summary"]["byStatus"] == summary["byStatus"]
    # Exactly one results file and one summary (the bucket is versioned: a rewrite would show).
    for key in (f"{prefix}kites.results.jsonl", f"{prefix}kites.summary.json"):
        versions = h.s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
        assert len(versions) == 1, key
    # The results are not read back as a new batch (reserved names).
    assert not any(str(r.get("batchId")) != event["batchId"] for r in records.values() if r.get("batchLine"))


def test_a_batch_that_runs_out_of_time_resumes_from_its_checkpoint_and_enqueues_each_line_once(
    harness: Harness,
) -> None:
    h = harness
    bucket, prefix = h.outputs["OutputBucketName"], h.outputs["BatchesPrefix"]
    lines = [json.dumps({"jobId": f"long-{n:02d}", "prompt": f"kite number {n}"}) for n in range(1, 26)]
    h.s3.put_object(Bucket=bucket, Key=f"{prefix}long.jsonl", Body="\n".join(lines).encode() + b"\n")

    summary = wait_for(lambda: read_json(h, f"{prefix}long.summary.json"), 180, what="the summary")
    assert summary["jobs"] == 25 and summary["byStatus"] == {"COMPLETED": 25}
    pauses = [line for line in h.log_lines if "batch paused for time" in line]
    assert len(pauses) == 2, pauses  # after lines 10 and 20; the third invocation finishes
    records = [r for r in h.records().values() if str(r.get("jobId", "")).startswith("long-")]
    assert sorted(int(r["batchLine"]) for r in records) == list(range(1, 26))
    assert len({r["batchId"] for r in records}) == 1
    # Each line was submitted once: no line before a checkpoint was read again into a new task.
    prompts = [t["prompt"] for t in h.sim.tasks() if str(t.get("prompt", "")).startswith("kite number ")]
    assert sorted(prompts) == sorted(f"kite number {n}" for n in range(1, 26))
