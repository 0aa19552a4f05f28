"""A `submit --file` batch through the whole pipeline, followed by `imagejobs batch status|results|sheet`:
the batch item opened by the CLI, every job counted once (a line the pipeline rejects included), the
results file the pipeline writes under batch-results/, downloaded beside the outputs."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.cli import main
from imagejobs_tools.reliability.stacksuites import Harness, running_stack
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LINES = [
    json.dumps({"prompt": "a red kite", "aspectRatio": "1:1"}),
    json.dumps({"prompt": "two blue kites", "providerInput": {"simOutputCount": 2}}),
    "",
    json.dumps(
        {
            "jobId": "kite-fails",
            "prompt": "a kite that fails",
            "providerInput": {"simFailCode": "EMPTY_RESULT"},
        }
    ),
    json.dumps({"prompt": "   "}),  # sent; the pipeline rejects it (and counts it)
    "{not json",  # refused by the CLI: not sent, not counted
]


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with running_stack("sk_test_cli_batch") as h:
        yield h


def cli(h: Harness, *args: str) -> tuple[int, str, str]:
    target = [
        "--endpoint-url", h.stack.endpoint_url, "--queue-url", h.outputs["JobsQueueUrl"],
        "--table", h.outputs["JobsTableName"], "--bucket", h.outputs["OutputBucketName"],
        "--region", h.stack.config.region,
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, *target])
    return code, out.getvalue(), err.getvalue()


def test_a_submitted_file_completes_as_a_batch_and_its_results_are_downloaded(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    jobs = tmp_path / "kites.jsonl"
    jobs.write_text("\n".join(LINES) + "\n")

    started = time.monotonic()
    code, out, err = cli(h, "submit", "--file", str(jobs), "--json")
    assert code == 1, err  # the line refused here
    (batch_id,) = {json.loads(line)["batchId"] for line in out.splitlines()}

    def status() -> dict[str, Any] | None:
        code, out, err = cli(h, "batch", "status", batch_id, "--json")
        assert code == 0, err
        progress: dict[str, Any] = json.loads(out)
        return progress if progress["batchStatus"] == "COMPLETED" else None

    progress = wait_for(status, 180, what=f"batch {batch_id} COMPLETED", interval=1.0)
    print(f"\n4-job CLI batch: COMPLETED {time.monotonic() - started:.1f} s after submit")
    assert (progress["expected"], progress["done"]) == (4, 4)
    assert progress["terminal"] == {"COMPLETED": 2, "FAILED": 1, "REJECTED": 1}
    assert progress["creditsFrom"] == "summary" and progress["creditsUsed"] > 0
    assert progress["resultsUri"].endswith(f"/batch-results/{batch_id}.results.jsonl")

    out_dir = tmp_path / "dl"
    code, _, err = cli(h, "batch", "results", batch_id, "--out", str(out_dir))
    assert code == 0, err
    assert "3 files downloaded, 0 already there; 0 jobs failed; 2 jobs not COMPLETED" in err
    results = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "COMPLETED"),
        (2, "COMPLETED"),
        (4, "FAILED"),
        (5, "REJECTED"),
    ]
    assert results[2]["jobId"] == "kite-fails" and results[3]["jobId"] == f"{batch_id}-5"
    assert "prompt" in results[3]["error"]["fieldErrors"]
    for line in results[:2]:
        assert sorted(p.name for p in (out_dir / line["jobId"]).iterdir()) == [
            f"{n}.png" for n in range(len(line["outputs"]))
        ]

    code, _, err = cli(h, "batch", "sheet", batch_id, "--out", str(tmp_path / "sheet.html"))
    assert code == 0 and "4 jobs, 3 images (embedded)" in err, err
    page = (tmp_path / "sheet.html").read_text()
    assert page.count('<tr data-status="') == 4 and "EMPTY_RESULT" in page
