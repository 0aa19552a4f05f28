from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.cli import main
from imagejobs_tools.jobcli.client import JobsClient
from imagejobs_tools.jobcli.messages import SQS_MAX_MESSAGE_BYTES, OutgoingJob, iter_jsonl, prepare
from tests.unit.jobcli.conftest import CallCounter, MockStack


def _jobs(count: int) -> list[OutgoingJob]:
    return [prepare({"jobId": f"job-{i}", "prompt": f"prompt {i}"}, f"test:{i + 1}") for i in range(count)]


def test_single_submit_sends_the_message_and_prints_the_given_job_id(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = main(
        ["submit", "a red fox", "--model", "gpt-image-2", "--aspect-ratio", "16:9", "--job-id", "fox-1",
         "--input", "https://example.com/a.png", "s3://bucket/in.png", "--metadata", "team=ads", "run=7",
         *stack.resources.target_args()]
    )  # fmt: skip

    assert exit_code == 0
    assert capsys.readouterr().out.split() == ["fox-1"]
    [body] = stack.received_bodies()
    assert json.loads(body) == {
        "jobId": "fox-1",
        "prompt": "a red fox",
        "model": "gpt-image-2",
        "aspectRatio": "16:9",
        "inputImageUrls": ["https://example.com/a.png", "s3://bucket/in.png"],
        "metadata": {"team": "ads", "run": "7"},
    }
    assert Path(".imagejobs/last-submit.txt").read_text().split() == ["fox-1"]


def test_single_submit_generates_a_job_id_and_puts_it_in_the_message(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "a cat", "--json", *stack.resources.target_args()]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed["jobId"].startswith("job-") and len(printed["jobId"]) == 36
    assert printed["messageId"]
    [body] = stack.received_bodies()
    assert json.loads(body) == {"jobId": printed["jobId"], "prompt": "a cat"}


def test_a_job_id_the_pipeline_would_reject_is_refused_before_sending(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # The pipeline would record the rejection under the SQS message id: the user could never find it.
    assert main(["submit", "x", "--job-id", "bad id", *stack.resources.target_args()]) == 2
    assert "jobId: must match ^[A-Za-z0-9_-]{1,80}$ (1-80 letters, digits, '_' or '-'), got 'bad id'" in (
        capsys.readouterr().err
    )
    assert stack.received_bodies() == []


def test_a_local_file_as_input_is_refused_before_sending_saying_how(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("bottle.png").write_bytes(b"png")
    assert main(["submit", "x", "--input", "./bottle.png", *stack.resources.target_args()]) == 2
    err = capsys.readouterr().err
    assert "inputImageUrls: './bottle.png' is a local file; the pipeline fetches URLs" in err
    assert "aws s3 cp ./bottle.png s3://BUCKET/uploads/bottle.png" in err
    assert main(["submit", "x", "--input", "bottle.jpg", *stack.resources.target_args()]) == 2
    assert "'bottle.jpg' is neither an https:// or s3:// URL nor a file" in capsys.readouterr().err
    assert stack.received_bodies() == []


def test_bad_metadata_is_a_usage_error_naming_the_field(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "x", "--metadata", "novalue", *stack.resources.target_args()]) == 2
    assert "metadata: expected key=value, got 'novalue'" in capsys.readouterr().err
    assert stack.received_bodies() == []


def test_jsonl_submit_sends_ten_per_batch_and_prints_ids_in_order(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps({"jobId": f"j{i:02d}", "prompt": f"p{i}"}) for i in range(23)]
    Path("jobs.jsonl").write_text("\n".join(lines) + "\n")
    counter = CallCounter()
    client = stack.client()
    counter.attach(stack.sqs)

    chunks = [Path("jobs.jsonl").read_bytes()]
    results = list(client.submit_messages(job for job in iter_jsonl(chunks, "jobs.jsonl")))

    assert [r.job_id for r in results] == [f"j{i:02d}" for i in range(23)]
    assert all(r.ok for r in results)
    assert counter.calls == {"SendMessageBatch": 3}
    assert sorted(json.loads(b)["jobId"] for b in stack.received_bodies()) == [f"j{i:02d}" for i in range(23)]

    # The same through the command line.
    assert main(["submit", "--file", "jobs.jsonl", *stack.resources.target_args()]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [f"j{i:02d}" for i in range(23)]
    assert "sent 23 jobs" in captured.err
    assert len(stack.received_bodies()) == 23


def test_jsonl_bad_lines_are_reported_by_line_number_and_the_rest_still_go(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("jobs.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"jobId": "ok-1", "prompt": "one"}),
                "{not json",
                "",
                json.dumps(["a", "list"]),
                json.dumps({"prompt": "generated id", "model": "custom"}),
                json.dumps({"jobId": 42, "prompt": "numeric id"}),
                json.dumps({"jobId": "big", "prompt": "x" * SQS_MAX_MESSAGE_BYTES}),
                json.dumps({"jobId": "ok-2", "prompt": "two"}),
            ]
        )
        + "\n"
    )

    exit_code = main(
        ["submit", "--file", "jobs.jsonl", "--model", "default-model", *stack.resources.target_args()]
    )

    captured = capsys.readouterr()
    assert exit_code == 1
    assert "jobs.jsonl:2: not valid JSON: " in captured.err
    assert "jobs.jsonl:4: expected a JSON object, got list" in captured.err
    rule = "must match ^[A-Za-z0-9_-]{1,80}$ (1-80 letters, digits, '_' or '-')"
    assert f"jobs.jsonl:6: jobId: {rule}, got 42" in captured.err
    assert "jobs.jsonl:7: line is" in captured.err and "over the SQS limit" in captured.err
    assert "sent 3 jobs" in captured.err and "4 bad lines" in captured.err
    assert "bad lines: jobs.jsonl:2, jobs.jsonl:4, jobs.jsonl:6, jobs.jsonl:7" in captured.err
    printed = captured.out.split()
    bodies = {json.loads(b)["jobId"]: json.loads(b) for b in stack.received_bodies()}
    assert set(bodies) == set(printed)
    # One batch: each job at its line (blank lines count), a line without jobId named after it.
    (batch_id,) = {body["batchId"] for body in bodies.values()}
    assert batch_id.startswith("b-") and f"as batch {batch_id}" in captured.err
    assert printed == ["ok-1", f"{batch_id}-5", "ok-2"]
    assert [bodies[job_id]["batchLine"] for job_id in printed] == [1, 5, 8]
    # The lines refused here were never sent: the batch expects the three that were.
    batch = stack.client().batch(batch_id)
    assert batch is not None and (batch["expected"], batch["batchStatus"]) == (3, "OPEN")
    assert batch["resultsKey"] == f"batch-results/{batch_id}.results.jsonl"
    # --model is a default for lines without one; a line's own model wins.
    assert bodies["ok-1"]["model"] == "default-model"
    assert bodies[printed[1]]["model"] == "custom"


def test_missing_jsonl_file_is_a_clear_error(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--file", "nope.jsonl", *stack.resources.target_args()]) == 2
    assert "cannot read nope.jsonl: No such file or directory" in capsys.readouterr().err


def test_submit_streams_its_input_without_reading_ahead(stack: MockStack) -> None:
    pulled = 0

    def endless() -> Iterator[OutgoingJob]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield prepare({"jobId": f"s{i}", "prompt": "p"}, f"stream:{i}")

    first = next(iter(stack.client().submit_messages(endless())))

    assert first.ok and first.job_id == "s0"
    assert pulled == 11  # one batch of 10, plus the job that did not fit in it


def test_batches_also_respect_the_total_payload_limit(stack: MockStack) -> None:
    counter = CallCounter().attach(stack.sqs)
    big = [prepare({"jobId": f"b{i}", "prompt": "x" * 100_000}, f"big:{i}") for i in range(5)]

    results = list(stack.client().submit_messages(big))

    assert all(r.ok for r in results)
    assert counter.calls == {"SendMessageBatch": 3}  # 2 + 2 + 1: 3 x 100 KB would exceed 256 KB


class FlakySqs:
    """SendMessageBatch that fails chosen entries on chosen calls (SQS's partial batch failure)."""

    def __init__(self, fail_plan: list[dict[str, bool]]) -> None:
        self.fail_plan = fail_plan  # per call: job id → sender fault?
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        plan = self.fail_plan[len(self.calls)] if len(self.calls) < len(self.fail_plan) else {}
        self.calls.append([json.loads(e["MessageBody"])["jobId"] for e in Entries])
        successful, failed = [], []
        for entry in Entries:
            job_id = json.loads(entry["MessageBody"])["jobId"]
            if job_id in plan:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": plan[job_id],
                        "Code": "InternalError",
                        "Message": "boom",
                    }
                )
            else:
                successful.append({"Id": entry["Id"], "MessageId": f"mid-{job_id}", "MD5OfMessageBody": "x"})
        return {"Successful": successful, "Failed": failed}


def test_partial_batch_failures_are_retried_then_reported() -> None:
    sleeps: list[float] = []
    always_failing = {"job-2": False}
    sqs = FlakySqs(
        [{"job-1": False, "job-2": False, "job-3": True}, always_failing, always_failing, always_failing]
    )
    client = JobsClient(sqs, None, None, queue_url="https://queue", max_send_attempts=4, sleep=sleeps.append)  # type: ignore[arg-type]

    results = {r.job_id: r for r in client.submit_messages(_jobs(5))}

    assert sqs.calls[0] == [f"job-{i}" for i in range(5)]
    assert sqs.calls[1:] == [["job-1", "job-2"], ["job-2"], ["job-2"]]  # the sender fault is never retried
    assert results["job-0"].ok and results["job-4"].ok
    assert results["job-1"].ok and results["job-1"].attempts == 2
    assert (
        not results["job-2"].ok
        and results["job-2"].attempts == 4
        and "InternalError" in (results["job-2"].error or "")
    )
    assert not results["job-3"].ok and results["job-3"].attempts == 1
    assert len(sleeps) == 3 and sleeps == sorted(sleeps)  # backoff grows


def test_send_failures_make_the_command_fail_and_are_reported(
    stack: MockStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("jobs.jsonl").write_text(
        "".join(json.dumps({"jobId": f"job-{i}", "prompt": "p"}) + "\n" for i in range(3))
    )
    flaky = FlakySqs([{"job-1": True}])
    original_init = JobsClient.__init__

    def init_with_flaky_sqs(self: JobsClient, sqs: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, flaky, *args, **kwargs)

    monkeypatch.setattr(JobsClient, "__init__", init_with_flaky_sqs)

    assert main(["submit", "--file", "jobs.jsonl", *stack.resources.target_args()]) == 1

    captured = capsys.readouterr()
    assert captured.out.split() == ["job-0", "job-2"]
    assert "jobs.jsonl:2: job-1: not sent (1 attempts): InternalError: boom" in captured.err
    assert "sent 2 jobs" in captured.err and "1 send failures" in captured.err
    assert Path(".imagejobs/last-submit.txt").read_text().split() == ["job-0", "job-2"]


def test_prompt_and_file_are_mutually_exclusive(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", *stack.resources.target_args()]) == 2
    assert "give either a PROMPT or --file" in capsys.readouterr().err


def test_jsonl_lines_that_are_not_utf8_are_bad_lines_and_a_bom_is_fine(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("jobs.jsonl").write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"jobId": "bom", "prompt": "p"}).encode() + b"\n"
        b'{"jobId": "latin1", "prompt": "caf\xe9"}\n'
        + json.dumps({"jobId": "after", "prompt": "p"}).encode()
        + b"\n"
    )

    assert main(["submit", "--file", "jobs.jsonl", *stack.resources.target_args()]) == 1

    captured = capsys.readouterr()
    assert captured.out.split() == ["bom", "after"]
    assert "jobs.jsonl:2: not UTF-8 text: " in captured.err


def test_a_batch_id_is_checked_and_a_line_may_not_name_its_batch(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("jobs.jsonl").write_text(
        json.dumps({"prompt": "p", "batchLine": 9}) + "\n" + json.dumps({"prompt": "q"}) + "\n"
    )
    assert main(["submit", "--file", "jobs.jsonl", "--batch-id", "a b", *stack.resources.target_args()]) == 2
    assert "--batch-id: must match ^[A-Za-z0-9_-]{1,80}$" in capsys.readouterr().err
    assert main(["submit", "x", "--batch-id", "b1", *stack.resources.target_args()]) == 2
    assert "--batch-id applies to --file" in capsys.readouterr().err
    too_long = "b" * 72
    assert (
        main(["submit", "--file", "jobs.jsonl", "--batch-id", too_long, *stack.resources.target_args()]) == 2
    )
    assert "--batch-id: at most 71 characters" in capsys.readouterr().err

    assert main(["submit", "--file", "jobs.jsonl", "--batch-id", "mine", *stack.resources.target_args()]) == 1
    captured = capsys.readouterr()
    assert "jobs.jsonl:1: batchLine: is set by submit --file" in captured.err
    assert captured.out.split() == ["mine-2"]
    # The same batch again resumes it: the same job ids, nothing new to expect.
    assert main(["submit", "--file", "jobs.jsonl", "--batch-id", "mine", *stack.resources.target_args()]) == 1
    assert capsys.readouterr().out.split() == ["mine-2"]
    assert [json.loads(b)["jobId"] for b in stack.received_bodies()] == ["mine-2", "mine-2"]
    batch = stack.client().batch("mine")
    assert batch is not None and batch["expected"] == 1 and batch["source"] == {"file": "jobs.jsonl"}


def test_a_missing_queue_stops_the_submit_with_one_error_line(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("jobs.jsonl").write_text(json.dumps({"jobId": "lost", "prompt": "p"}) + "\n")
    missing_queue = stack.resources.queue_url + "-gone"
    args = ["--queue-url", missing_queue, "--table", stack.resources.table_name, "--bucket", "b"]

    assert main(["submit", "--file", "jobs.jsonl", *args]) == 3

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "imagejobs: stopped after sending 0 jobs" in captured.err
    assert "imagejobs: error: imagejobs submit failed" in captured.err
    # The batch was opened first; it stays open (no expected) until the same command is run again.
    assert "left open: run the same command with --batch-id b-" in captured.err


def test_a_webhook_url_is_the_jobs_or_every_line_of_a_file_that_names_none(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    hook, own = "https://hooks.example.com/imagejobs", "https://own.example.com/h"
    assert (
        main(["submit", "a cat", "--job-id", "cat-1", "--webhook-url", hook, *stack.resources.target_args()])
        == 0
    )
    [body] = stack.received_bodies()
    assert json.loads(body)["webhookUrl"] == hook

    lines = [json.dumps({"prompt": "a"}), json.dumps({"prompt": "b", "webhookUrl": own})]
    Path("hooked.jsonl").write_text("\n".join(lines) + "\n")
    arguments = ["submit", "--file", "hooked.jsonl", "--webhook-url", hook, *stack.resources.target_args()]
    assert main(arguments) == 0
    sent = [json.loads(b) for b in stack.received_bodies()]
    assert sorted((m["prompt"], m["webhookUrl"]) for m in sent if m["prompt"] != "a cat") == [
        ("a", hook),
        ("b", own),
    ]


@pytest.mark.parametrize("file", [False, True])
def test_a_webhook_url_that_is_not_a_url_is_refused_before_sending(
    stack: MockStack, capsys: pytest.CaptureFixture[str], file: bool
) -> None:
    Path("one.jsonl").write_text('{"prompt": "a"}\n')
    source = ["--file", "one.jsonl"] if file else ["x"]
    assert (
        main(["submit", *source, "--webhook-url", "hooks.example.com", *stack.resources.target_args()]) == 2
    )
    assert "--webhook-url: 'hooks.example.com' is not an https:// URL" in capsys.readouterr().err
    assert stack.received_bodies() == []
