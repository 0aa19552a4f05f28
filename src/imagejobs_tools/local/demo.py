"""`imagejobs local demo`: a demo batch through the local stack's public endpoints.

Starts the stack, uploads a generated input image, sends text-to-image jobs at
several aspect ratios, one image-to-image job and one invalid job; then uploads
a photo under the inputs prefix (prompt in `x-amz-meta-prompt`) and a small
JSONL batch (three jobs and one bad line) under the batches prefix (S3 triggers,
docs/uploads.md). Waits for every job to reach a terminal state, downloads the
images, prints the records, the batch's intake report and, once its last job is
done, the batch's summary and results file (docs/batches.md). Exits 0 only if
every job ended as expected, the report names the bad line and the summary
counts the batch's four lines as they ended.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer
from imagejobs.batches import BatchFiles
from imagejobs.store import TERMINAL

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from imagejobs_tools.local.stack import LocalStackConfig

INPUT_KEY = "demo-inputs/product.png"


@dataclass(frozen=True)
class DemoJob:
    job_id: str
    message: dict[str, Any]
    expected: str
    label: str
    via: str = "sqs"  # "sqs" (sent to the jobs queue) or "s3" (made by an upload)


PHOTO_PROMPT = "The same bottle on matte ivory paper, soft editorial side light"
BATCH_BAD_LINE = 4  # the demo batch's invalid line (no prompt), which the report must name


def demo_batch(run_id: str) -> tuple[list[DemoJob], bytes]:
    """Three jobs with their own ids and one invalid line, as the JSONL a team would upload."""
    jobs = [
        DemoJob(
            f"demo-{run_id}-batch-{n}",
            {"jobId": f"demo-{run_id}-batch-{n}", "prompt": prompt, "aspectRatio": ratio},
            "COMPLETED",
            f"JSONL line {n} {ratio}",
            via="s3",
        )
        for n, (prompt, ratio) in enumerate(
            [
                ("A ceramic mug on linen, morning light", "1:1"),
                ("A glass perfume bottle on slate, rim light", "4:5"),
                ("A wooden desk lamp, studio backdrop", "3:2"),
            ],
            start=1,
        )
    ]
    lines = [json.dumps(job.message) for job in jobs]
    lines.insert(BATCH_BAD_LINE - 1, json.dumps({"jobId": f"demo-{run_id}-batch-bad", "aspectRatio": "1:1"}))
    return jobs, ("\n".join(lines) + "\n").encode("utf-8")


def find_upload_job(dynamodb: DynamoDBClient, table: str, uri: str, timeout: float) -> str | None:
    """The job id S3IntakeFunction derived for an upload (records keep the s3:// input URI)."""
    deadline = time.monotonic() + timeout
    deserializer = TypeDeserializer()
    while time.monotonic() < deadline:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                record = {key: deserializer.deserialize(value) for key, value in item.items()}
                if uri in ((record.get("request") or {}).get("inputImageUrls") or []):
                    return str(record["jobId"])
        time.sleep(0.5)
    return None


def fetch_json(
    s3: S3Client, bucket: str, key: str, timeout: float, *, complete: bool = True
) -> dict[str, Any] | None:
    """The JSON object at the key once it is there (and, with ``complete``, says COMPLETE)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            if not complete or document.get("status") == "COMPLETE":
                return dict(document)
        except s3.exceptions.NoSuchKey:
            pass
        time.sleep(0.5)
    return None


def demo_png(width: int = 64, height: int = 80) -> bytes:
    """A small gradient PNG (stdlib only): the image-to-image demo's input."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 3 % 256, 160))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def demo_jobs(run_id: str, bucket: str) -> list[DemoJob]:
    prompt = "A premium skincare bottle on warm ivory paper, soft editorial side light"
    jobs = [
        DemoJob(
            f"demo-{run_id}-{name}",
            {"prompt": prompt, "aspectRatio": ratio},
            "COMPLETED",
            f"text→image {ratio}",
        )
        for name, ratio in (("square", "1:1"), ("wide", "16:9"), ("tall", "9:16"), ("portrait", "4:5"))
    ]
    jobs.append(
        DemoJob(
            f"demo-{run_id}-edit",
            {
                "prompt": "Keep the bottle, replace the background with matte ivory paper",
                "aspectRatio": "4:5",
                "inputImageUrls": [f"s3://{bucket}/{INPUT_KEY}"],
                "metadata": {"source": "imagejobs-demo"},
            },
            "COMPLETED",
            "image→image 4:5",
        )
    )
    jobs.append(DemoJob(f"demo-{run_id}-invalid", {"aspectRatio": "1:1"}, "REJECTED", "invalid (no prompt)"))
    for job in jobs:
        job.message["jobId"] = job.job_id
    return jobs


def fetch_record(dynamodb: DynamoDBClient, table: str, job_id: str) -> dict[str, Any] | None:
    item = dynamodb.get_item(TableName=table, Key={"jobId": {"S": job_id}}, ConsistentRead=True).get("Item")
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def wait_for_jobs(
    dynamodb: DynamoDBClient, table: str, jobs: list[DemoJob], timeout: float, progress: Any = None
) -> dict[str, dict[str, Any] | None]:
    records: dict[str, dict[str, Any] | None] = {job.job_id: None for job in jobs}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in jobs:
            record = records[job.job_id]
            if record is None or record.get("status") not in TERMINAL:
                records[job.job_id] = fetch_record(dynamodb, table, job.job_id)
        if progress is not None:
            progress(records)
        if all(r is not None and r.get("status") in TERMINAL for r in records.values()):
            break
        time.sleep(0.5)
    return records


DEMO_JOB_DIR = re.compile(r"demo-[0-9a-f]{6}-[a-z0-9-]+")


def remove_earlier_demo_outputs(output_dir: Path) -> None:
    """Each run's jobs are new: without this, `demo-output/` keeps every earlier run's images. Only
    folders the demo made (`demo-<run>-<job>`) go; anything else in the directory is the user's."""
    for folder in output_dir.glob("demo-*"):
        if folder.is_dir() and DEMO_JOB_DIR.fullmatch(folder.name):
            shutil.rmtree(folder)


def download_outputs(s3: S3Client, record: dict[str, Any], output_dir: Path) -> list[Path]:
    paths = []
    for output in record.get("outputs") or []:
        target = output_dir / record["jobId"] / Path(output["key"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(output["bucket"], output["key"], str(target))
        paths.append(target)
    return paths


def demo_stack_options() -> dict[str, Any]:
    """What the demo's stack is started with, beyond the command line's options."""
    from imagejobs_tools.local.logview import CurrentStdout, LogView

    return {
        # Keep the terminal for the demo: handler logs at ERROR only, no EMF metric lines.
        "environment_overrides": {"POWERTOOLS_METRICS_DISABLED": "true"},
        # Through sys.stdout as it is at each line: above the live progress table while it shows.
        "log_sink": LogView(CurrentStdout()),
    }


def run_demo(config: LocalStackConfig, *, output_dir: Path, timeout: float) -> int:
    from rich.console import Console
    from rich.live import Live

    from imagejobs_tools.local import LocalStack, LocalStackError
    from imagejobs_tools.local.stack import PARAM_POLL_INTERVAL

    # Not a terminal (CI, a pipe): rich would wrap the tables at 80 columns and truncate job ids.
    console = Console(emoji=False, width=None if sys.stdout.isatty() else 160)
    if "LogLevel" not in config.parameter_overrides:
        config.parameter_overrides["LogLevel"] = "ERROR"
    stack = LocalStack(config)
    try:
        with console.status("starting the local stack…"):
            info = stack.start()
        interval = info.parameters.get(PARAM_POLL_INTERVAL, "?")
        console.print(
            f"local stack up in {info.timings['totalSeconds']:.1f} s at {info.endpoint_url}"
            f" (simulator {info.simulator_url}, poll interval {interval} s)"
        )
        outputs = info.outputs
        bucket, table, queue = outputs["OutputBucketName"], outputs["JobsTableName"], outputs["JobsQueueUrl"]
        s3, sqs, dynamodb = stack.client("s3"), stack.client("sqs"), stack.client("dynamodb")
        s3.put_object(Bucket=bucket, Key=INPUT_KEY, Body=demo_png(), ContentType="image/png")
        run_id = uuid.uuid4().hex[:6]
        jobs = demo_jobs(run_id, bucket)
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(i), "MessageBody": json.dumps(job.message)} for i, job in enumerate(jobs)],
        )
        console.print(f"sent {len(jobs)} jobs to {queue}")
        # S3 triggers: a photo whose prompt is its metadata, and a small JSONL batch.
        photo_key = f"{outputs.get('InputsPrefix', 'inputs/')}demo {run_id}/bottle é.png"
        s3.put_object(
            Bucket=bucket,
            Key=photo_key,
            Body=demo_png(),
            ContentType="image/png",
            Metadata={"prompt": PHOTO_PROMPT, "aspect-ratio": "4:5"},
        )
        batch_jobs, batch_body = demo_batch(run_id)
        batch_key = f"{outputs.get('BatchesPrefix', 'batches/')}demo-{run_id}.jsonl"
        s3.put_object(Bucket=bucket, Key=batch_key, Body=batch_body, ContentType="application/x-ndjson")
        console.print(f"uploaded s3://{bucket}/{photo_key} and s3://{bucket}/{batch_key} (4 lines, 1 bad)")
        photo_uri = f"s3://{bucket}/{photo_key}"
        with console.status("waiting for the upload's job…"):
            photo_job_id = find_upload_job(dynamodb, table, photo_uri, timeout=60)
        if photo_job_id is None:
            console.print(f"[red]no job was made for {photo_uri}[/red]")
            return 1
        jobs.append(DemoJob(photo_job_id, {"aspectRatio": "4:5"}, "COMPLETED", "photo upload 4:5", via="s3"))
        jobs.extend(batch_jobs)
        started = time.monotonic()
        with Live(_progress_table(jobs, {}, 0.0), console=console, refresh_per_second=4) as live:
            records = wait_for_jobs(
                dynamodb,
                table,
                jobs,
                timeout,
                lambda current: live.update(_progress_table(jobs, current, time.monotonic() - started)),
            )
        console.print()
        remove_earlier_demo_outputs(output_dir)
        downloaded: dict[str, list[Path]] = {}
        for job in jobs:
            record = records[job.job_id]
            if record and record.get("status") == "COMPLETED":
                downloaded[job.job_id] = download_outputs(s3, record, output_dir)
        console.print(_records_table(jobs, records, downloaded))
        report = fetch_json(s3, bucket, batch_key + ".report.json", timeout=30)
        report_ok = _print_report(console, batch_key, report)
        files = BatchFiles.beside(bucket, batch_key)
        # Written once the batch's last job is done: seconds after, by BatchResultsFunction.
        with console.status("waiting for the batch's summary…"):
            summary = fetch_json(s3, bucket, files.summary_key, timeout=60, complete=False)
        expected_counts = dict(Counter([*(job.expected for job in batch_jobs), "REJECTED"]))
        summary_ok = _print_summary(console, files, summary, expected_counts)
        failures = [job for job in jobs if (records[job.job_id] or {}).get("status") != job.expected]
        for job in failures:
            record = records[job.job_id] or {}
            console.print(
                f"[red]{job.job_id}: expected {job.expected}, got {record.get('status', 'no record')}"
                f" {json.dumps(record.get('error'), default=str) if record.get('error') else ''}[/red]"
            )
        if failures or not report_ok or not summary_ok:
            return 1
        console.print(f"[green]all {len(jobs)} jobs ended as expected; images in {output_dir}/[/green]")
        return 0
    except LocalStackError as exc:
        console.print(f"[red]imagejobs local demo: {exc}[/red]")
        return 2
    finally:
        stack.stop()


def _progress_table(jobs: list[DemoJob], records: dict[str, dict[str, Any] | None], elapsed: float) -> Any:
    from rich.table import Table

    table = Table(title=f"demo batch ({elapsed:.0f} s)", title_justify="left")
    for column in ("job", "kind", "status", "polls"):
        table.add_column(column)
    for job in jobs:
        record = records.get(job.job_id) or {}
        status = record.get("status", "queued")
        style = "green" if status == job.expected else ("yellow" if status not in TERMINAL else "red")
        table.add_row(job.job_id, job.label, f"[{style}]{status}[/{style}]", str(record.get("polls", "")))
    return table


def _records_table(
    jobs: list[DemoJob], records: dict[str, dict[str, Any] | None], downloaded: dict[str, list[Path]]
) -> Any:
    from rich.table import Table

    table = Table(title="job records", title_justify="left")
    table.add_column("jobId", no_wrap=True)
    for column in ("status", "model", "aspect", "credits", "latency", "outputs"):
        table.add_column(column)
    for job in jobs:
        record = records[job.job_id] or {}
        request = record.get("request") or {}
        latency = (record.get("latency") or {}).get("totalSeconds")
        credits = record.get("creditsUsed")
        if record.get("creditsRefunded"):
            credits = f"{credits} (refunded)"
        files = downloaded.get(job.job_id, [])
        detail = f"{files[0].parent}/ ({len(files)})" if files else ""
        if not detail and record.get("error"):
            error = record["error"]
            field_errors = error.get("fieldErrors") or {}
            detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in field_errors.items()) or str(
                error.get("message")
            )
        table.add_row(
            job.job_id,
            str(record.get("status", "no record")),
            str(record.get("model", request.get("model", ""))),
            str(request.get("aspectRatio", job.message.get("aspectRatio", ""))),
            "" if credits is None else str(credits),
            "" if latency is None else f"{float(latency):.1f} s",
            detail,
        )
    return table


def _print_report(console: Any, batch_key: str, report: dict[str, Any] | None) -> bool:
    """Print the batch report; True when it has the three jobs and names the bad line."""
    if report is None:
        console.print(f"[red]no COMPLETE report for {batch_key}[/red]")
        return False
    bad = "; ".join(f"line {e['line']} {e['field']}: {e['reason']}" for e in report.get("badLines", []))
    console.print(
        f"batch report {batch_key}.report.json: {report['lines']} lines, "
        f"{report['enqueued']} enqueued, {report['badLineCount']} bad ({bad})"
    )
    ok = report["enqueued"] == 3 and [e["line"] for e in report.get("badLines", [])] == [BATCH_BAD_LINE]
    if not ok:
        console.print("[red]the batch report does not match the demo batch[/red]")
    return ok


def _print_summary(
    console: Any, files: BatchFiles, summary: dict[str, Any] | None, expected_counts: dict[str, int]
) -> bool:
    """Print the batch summary; True when its counts are the demo batch's lines as they ended."""
    if summary is None:
        console.print(f"[red]no summary at s3://{files.bucket}/{files.summary_key}[/red]")
        return False
    counts = ", ".join(f"{status} {n}" for status, n in summary["byStatus"].items())
    latency = summary.get("latencySeconds") or {}
    console.print(
        f"batch summary {files.summary_key}: {summary['jobs']} jobs ({counts}), "
        f"{summary['creditsSpent']} credits spent ({summary['creditsRefunded']} refunded), "
        f"latency p50 {latency.get('p50')} s / p95 {latency.get('p95')} s; "
        f"one line per input line in s3://{files.bucket}/{files.results_key}"
    )
    ok = summary["byStatus"] == expected_counts
    if not ok:
        console.print(
            f"[red]the batch summary does not match the demo batch (expected {expected_counts})[/red]"
        )
    return ok
