"""`imagejobs submit --file` batches and `imagejobs batch status|results|sheet`, the real console script
against a moto server; the pipeline's part (records, counting, the results file) by the domain's code."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from imagejobs.batch_results import BatchRecords, write_results
from imagejobs.batches import BatchStore
from imagejobs.store import BatchLine, iso
from PIL import Image

from tests.integration.jobcli.browser import dump_dom, screenshot
from tests.integration.jobcli.conftest import LocalStack
from tests.unit.jobcli.support import put_output

pytestmark = pytest.mark.integration

HOSTILE_PROMPT = '<script>document.title="pwned"</script><b>bold?</b> & more'


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


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


class Pipeline:
    """What the stack's functions would do with the batch's messages, with the domain's code."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.batches = BatchStore(stack.table)

    def finish(self, body: dict[str, Any], status: str, **fields: Any) -> None:
        now = time.time()
        record = {
            "jobId": body["jobId"],
            "batchId": body["batchId"],
            "batchLine": body["batchLine"],
            "status": status,
            "prompt": body["prompt"],
            "model": "gpt-image-2",
            "request": body,
            "createdAt": iso(now - 30),
            "updatedAt": iso(now),
            **fields,
        }
        if status in ("COMPLETED", "FAILED"):
            record |= {"submittedAt": iso(now - 25), "completedAt": iso(now), "latency": {"totalSeconds": 30}}
        self.stack.table.put_item(Item=record)
        if status in ("COMPLETED", "FAILED", "REJECTED"):  # JobEventsFunction, from the change stream
            assert self.batches.count_terminal(
                body["jobId"], BatchLine(body["batchId"], body["batchLine"]), status
            )

    def write_results(self, batch_id: str) -> dict[str, Any]:
        records = BatchRecords(self.stack.table)
        return write_results(
            batch_id, batches=self.batches, records=records, s3=self.stack.s3, lease_seconds=60
        )


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_batch_from_submit_to_its_results_and_contact_sheet(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    stack = local_stack
    lines = [
        json.dumps({"prompt": HOSTILE_PROMPT}),
        "",
        json.dumps({"jobId": "named", "prompt": "a named job"}),
        "[1]",  # refused here: not sent, not counted
        json.dumps({"prompt": "will fail"}),
        json.dumps({"prompt": ""}),  # the pipeline rejects it
        json.dumps({"prompt": "still running"}),
    ]
    (stack.cwd / "jobs.jsonl").write_text("\n".join(lines) + "\n")

    # submit --file: a batch id, each line's job at its line, the batch item opened, 5 expected.
    submitted = stack.run("submit", "--file", "jobs.jsonl", "--json")
    assert submitted.returncode == 1  # the bad line
    sent = [json.loads(line) for line in submitted.stdout.splitlines()]
    (batch_id,) = {entry["batchId"] for entry in sent}
    assert re.fullmatch(r"b-[0-9a-f]{16}", batch_id) and f"batch status {batch_id}" in submitted.stderr
    assert "jobs.jsonl:4: expected a JSON object, got list" in submitted.stderr
    bodies = {body["batchLine"]: body for body in _drain(stack)}
    assert sorted(bodies) == [1, 3, 5, 6, 7]
    assert [bodies[n]["jobId"] for n in (1, 3, 7)] == [f"{batch_id}-1", "named", f"{batch_id}-7"]
    assert {body["batchId"] for body in bodies.values()} == {batch_id}

    unknown = stack.run("batch", "status", "b-nope")
    assert unknown.returncode == 1 and "no batch 'b-nope' in local stack at" in unknown.stderr

    # The pipeline gets on with it: one COMPLETED with an output, one FAILED, one REJECTED, two running.
    pipeline = Pipeline(stack)
    bucket = stack.resources.bucket_name
    png = _png((200, 40, 40))
    output = put_output(stack.s3, bucket, f"outputs/{batch_id}-1/0.png", png)
    pipeline.finish(bodies[1], "COMPLETED", creditsUsed=3, outputs=[output])
    pipeline.finish(bodies[3], "SUBMITTED", creditsUsed=3)
    error = {"source": "provider", "code": "TASK_FAILED", "message": "content policy <violation>"}
    pipeline.finish(bodies[5], "FAILED", creditsUsed=3, creditsRefunded=True, error=error)
    rejected = {"source": "validation", "code": "VALIDATION_FAILED", "message": "invalid job: prompt",
                "fieldErrors": {"prompt": ["must not be empty"]}}  # fmt: skip
    pipeline.finish(bodies[6], "REJECTED", error=rejected)
    pipeline.finish(bodies[7], "RECEIVED")

    progress = _json(stack.run("batch", "status", batch_id, "--json"))
    assert (progress["done"], progress["expected"], progress["remaining"]) == (3, 5, 2)
    assert progress["terminal"] == {"COMPLETED": 1, "FAILED": 1, "REJECTED": 1}
    assert progress["running"] == {"RECEIVED": 1, "SUBMITTED": 1}
    assert (progress["creditsUsed"], progress["creditsRefunded"], progress["creditsSpent"]) == (9, 3, 6)
    assert progress["etaSeconds"] is not None and progress["etaSeconds"] > 0
    text = stack.run("batch", "status", batch_id)
    assert text.returncode == 0 and "3 of 5 done (60%)" in text.stdout

    # batch results while running: the COMPLETED job's output, a results file built from the records.
    out = stack.cwd / "dl"
    first = stack.run("batch", "results", batch_id, "--out", "dl")
    assert first.returncode == 0, first.stderr
    assert (out / f"{batch_id}-1" / "0.png").read_bytes() == png
    assert "1 file downloaded, 0 already there; 0 jobs failed; 4 jobs not COMPLETED" in first.stderr
    assert "built from the records (the batch is OPEN" in first.stderr
    built = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(line["line"], line["status"]) for line in built] == [
        (1, "COMPLETED"), (3, "SUBMITTED"), (5, "FAILED"), (6, "REJECTED"), (7, "RECEIVED"),
    ]  # fmt: skip
    # Resumable: a file already there is kept; a partial one is fetched again.
    assert (
        "0 files downloaded, 1 already there" in stack.run("batch", "results", batch_id, "--out", "dl").stderr
    )
    (out / f"{batch_id}-1" / "0.png").write_bytes(png[:100])
    assert (
        "1 file downloaded, 0 already there" in stack.run("batch", "results", batch_id, "--out", "dl").stderr
    )
    assert (out / f"{batch_id}-1" / "0.png").read_bytes() == png

    # The last two finish; the pipeline writes the batch's results: status and results read them.
    pipeline.finish(
        bodies[3],
        "COMPLETED",
        creditsUsed=3,
        outputs=[put_output(stack.s3, bucket, "o/n.png", _png((40, 40, 200)))],
    )
    pipeline.finish(
        bodies[7],
        "COMPLETED",
        creditsUsed=3,
        outputs=[put_output(stack.s3, bucket, "o/7.png", _png((40, 160, 40)))],
    )
    summary = pipeline.write_results(batch_id)
    progress = _json(stack.run("batch", "status", batch_id, "--json"))
    assert (progress["batchStatus"], progress["creditsFrom"], progress["creditsUsed"]) == (
        "COMPLETED",
        "summary",
        12,  # 3 COMPLETED and the FAILED one (refunded): 3 credits each
    )
    assert progress["terminal"] == summary["byStatus"] == {"COMPLETED": 3, "FAILED": 1, "REJECTED": 1}
    final = stack.run("batch", "results", batch_id, "--out", "dl")
    assert final.returncode == 0, final.stderr
    assert "2 files downloaded, 1 already there; 0 jobs failed; 2 jobs not COMPLETED" in final.stderr
    results_key = f"batch-results/{batch_id}.results.jsonl"
    in_s3 = stack.s3.get_object(Bucket=bucket, Key=results_key)["Body"].read()
    assert (out / "results.jsonl").read_bytes() == in_s3
    assert f"the pipeline's s3://{bucket}/{results_key}" in final.stderr

    # The contact sheet, embedded and linked to the downloaded files, in a real browser.
    sheet = stack.run("batch", "sheet", batch_id, "--out", "sheet.html")
    assert sheet.returncode == 0, sheet.stderr
    assert "wrote sheet.html: 5 jobs, 3 images (embedded)" in sheet.stderr
    linked = stack.run("batch", "sheet", batch_id, "--out", "linked/sheet.html", "--images", "dl")
    assert "3 images (linked from dl)" in linked.stderr
    assert 'src="../dl/named/0.png"' in (stack.cwd / "linked" / "sheet.html").read_text()
    page = (stack.cwd / "sheet.html").as_uri()

    dom = dump_dom(page)
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    assert 'data-images-total="3"' in body.group(1) and 'data-images-loaded="3"' in body.group(1)
    assert "<title>Batch " in dom and "pwned" not in dom.split("</title>")[0]  # the prompt's script never ran
    assert "&lt;script&gt;document.title=" in dom and "&lt;b&gt;bold?&lt;/b&gt;" in dom
    assert '<span class="code">TASK_FAILED</span> content policy &lt;violation&gt;' in dom
    assert "<li><code>prompt</code>: must not be empty</li>" in dom
    assert 'data-filter="ALL" data-rows-shown="5"' in body.group(1)
    assert re.findall(r'<button type="button" data-filter="(\w+)"', dom) == [
        "ALL",
        "COMPLETED",
        "FAILED",
        "REJECTED",
    ]
    filtered = dump_dom(page + "#status=FAILED")
    rows = re.findall(r'<tr data-status="(\w+)"( hidden="")?>', filtered)
    assert [(status, bool(hidden)) for status, hidden in rows] == [
        ("COMPLETED", True), ("COMPLETED", True), ("FAILED", False), ("REJECTED", True), ("COMPLETED", True),
    ]  # fmt: skip
    linked_dom = dump_dom((stack.cwd / "linked" / "sheet.html").as_uri())
    assert 'data-images-loaded="3"' in linked_dom and 'data-images-broken="0"' in linked_dom
    screenshot(page, "batch-sheet.png")
