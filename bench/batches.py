"""Batches (issue 15, docs/batches.md): a 1,000-line JSONL batch end to end on the local stack, and a
batch's results step alone at 10,000 and 100,000 lines.

    .venv/bin/python bench/batches.py            # 1,000 lines end to end; 10,000 and 100,000 lines
    .venv/bin/python bench/batches.py --smoke    # 20 lines; 200 and 2,000 lines

End to end: upload → the results file and summary beside the batch (S3 intake, the pipeline, the
change stream counting each job, BatchResultsFunction); the results step's own time is its
invocation's, from the local stack's dispatcher.

The results step alone (imagejobs.batch_results.write_results) runs in a fresh child process that
reports its wall time and its peak memory (tracemalloc: what the step allocated, and the growth of its
RSS), against a moto server holding the batch item and the S3 bucket. Its records come two ways:
- "seeded" (the smaller size): N finished records written to the moto table, read through the ByBatch
  index. moto answers each Query page by scanning and sorting the whole table, so a batch's pages cost
  O(N²) there (AWS: O(N)); 100,000 lines would take hours on moto alone;
- "served" (both sizes): the same records generated page by page, as DynamoDB serves the index (1 MB of
  projected items a page, LastEvaluatedKey), so the figures are the step's own.
The ratio of the served peaks (100,000 / 10,000 lines) shows whether memory stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from _common import REPO, InvocationLog, emit, instrument_dispatcher, local_stack, parser, wait_until

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

BUCKET = "bench-batches"
BATCH = "b-bench0000000000000000000000000000"


class ServedIndex:
    """The jobs table with its ByBatch index served as DynamoDB pages it: records of one batch generated
    a page at a time (1 MB of projected items), nothing held between pages; other calls go to moto."""

    PAGE_BYTES = 1024 * 1024

    def __init__(self, table: Table, size: int) -> None:
        self._table = table
        self._size = size

    def query(self, **kwargs: Any) -> dict[str, Any]:
        from imagejobs.batch_results import RESULT_ATTRIBUTES
        from imagejobs.store import to_dynamo

        start = int(kwargs.get("ExclusiveStartKey", {}).get("batchLine", 0)) + 1
        items: list[dict[str, Any]] = []
        read = 0
        for line in range(start, self._size + 1):
            record = finished(line)
            item = to_dynamo({k: v for k, v in record.items() if k in {*RESULT_ATTRIBUTES, *KEYS}})
            read += len(json.dumps(item, default=str))
            if read > self.PAGE_BYTES:
                break
            items.append(item)
        page: dict[str, Any] = {"Items": items, "Count": len(items)}
        if items and int(items[-1]["batchLine"]) < self._size:
            page["LastEvaluatedKey"] = {k: items[-1][k] for k in KEYS}
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


KEYS = ("jobId", "batchId", "batchLine")


def child(endpoint: str, table_name: str, served: int) -> None:
    """Child process: the results step alone; prints one JSON line of its figures."""
    import resource
    import tracemalloc

    import boto3
    from imagejobs.batch_results import BatchRecords, write_results
    from imagejobs.batches import BatchStore

    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    table = boto3.resource("dynamodb", **kwargs).Table(table_name)
    s3 = boto3.client("s3", **kwargs)
    s3.list_buckets()  # clients built before the baseline
    table.load()
    index = ServedIndex(table, served) if served else table
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    started = time.perf_counter()
    summary = write_results(
        BATCH, batches=BatchStore(table), records=BatchRecords(index), s3=s3, lease_seconds=900
    )
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "seconds": round(seconds, 2), "jobs": summary["jobs"], "tracedPeakMB": round(peak / 2**20, 1),
        "rssGrowthMB": round(rss_after - rss_before, 1),
    }))  # fmt: skip


def results_step(size: int, *, served: bool) -> dict[str, Any]:
    """A moto server with the batch item (and, unless ``served``, its N finished records); the results
    step run in a child."""
    import boto3
    from imagejobs.batches import BatchFiles, BatchStore
    from imagejobs.store import to_dynamo
    from moto.server import ThreadedMotoServer

    from imagejobs_tools.local.template import jobs_table_definition

    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
    try:
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        ddb = boto3.resource("dynamodb", **kwargs)
        table = ddb.create_table(TableName=f"jobs-{size}", **jobs_table_definition())
        boto3.client("s3", **kwargs).create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        if not served:
            with table.batch_writer() as writer:
                for line in range(1, size + 1):
                    writer.put_item(Item=to_dynamo(finished(line)))
        seeded = time.perf_counter() - started
        batches = BatchStore(table)
        batches.open(
            BATCH, BatchFiles(BUCKET, "batches/bench"), {"bucket": BUCKET, "key": "batches/bench.jsonl"}
        )
        table.update_item(
            Key={"jobId": f"batch#{BATCH}"},
            UpdateExpression="SET done = :n, expected = :n",
            ExpressionAttributeValues={":n": size},
        )
        run = subprocess.run(
            [sys.executable, __file__, "--child", endpoint, table.name, str(size if served else 0)],
            check=True, capture_output=True, text=True, cwd=REPO / "bench",
            env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        figures: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        figures["seedSeconds"] = round(seeded, 1)
        # Seeded and served records are the same: so must their results files be, byte for byte.
        digest, size_bytes = hashlib.sha256(), 0
        results = boto3.client("s3", **kwargs).get_object(Bucket=BUCKET, Key="batches/bench.results.jsonl")
        for chunk in iter(lambda: results["Body"].read(1 << 20), b""):
            digest.update(chunk)
            size_bytes += len(chunk)
        figures["resultsMB"] = round(size_bytes / 2**20, 1)
        figures["resultsSha256"] = digest.hexdigest()
        return figures
    finally:
        # moto's backends live in this process, shared by every server it starts: reset before the next.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        server.stop()


def finished(line: int) -> dict[str, Any]:
    """A COMPLETED job of the batch as the pipeline records it (a catalogue-sized prompt)."""
    return {
        "jobId": f"{BATCH}-{line}",
        "batchId": BATCH,
        "batchLine": line,
        "status": "COMPLETED",
        "prompt": f"catalogue item {line}: studio photo of a product on white, soft shadow, 4k " * 3,
        "model": "gpt-image-2",
        "kind": "image",
        "creditsUsed": 3,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "submittedAt": "2026-01-01T00:00:01.000Z",
        "completedAt": "2026-01-01T00:00:12.000Z",
        "updatedAt": "2026-01-01T00:00:12.000Z",
        "outputs": [
            {"bucket": BUCKET, "key": f"outputs/{BATCH}-{line}/0.png", "uri": "s3://x", "bytes": 1234}
        ],
        "latency": {"totalSeconds": 11.0 + (line % 100) / 10, "generationSeconds": 10.0, "submitMs": 80},
    }


def end_to_end(lines: int) -> dict[str, Any]:
    log = InvocationLog()
    with local_stack(poll_interval=1, sim_latency=(0.5, 2.0)) as stack:
        instrument_dispatcher(stack, log)
        s3 = stack.client("s3")
        bucket, prefix = stack.info.outputs["OutputBucketName"], stack.info.outputs["BatchesPrefix"]
        body = "".join(
            json.dumps({"prompt": f"catalogue item {n}", "aspectRatio": "1:1"}) + "\n" for n in range(lines)
        )
        started = time.perf_counter()
        s3.put_object(Bucket=bucket, Key=f"{prefix}bench.jsonl", Body=body.encode())

        def summary() -> Any:
            try:
                return json.loads(
                    s3.get_object(Bucket=bucket, Key=f"{prefix}bench.summary.json")["Body"].read()
                )
            except s3.exceptions.NoSuchKey:
                return None

        document = wait_until(summary, timeout=60 + lines * 1.0, what="the batch's summary")
        elapsed = time.perf_counter() - started
    steps = [s for s in log.durations.get("BatchResultsFunction", [])]
    return {
        "lines": lines,
        "uploadToSummarySeconds": round(elapsed, 1),
        "resultsStepSeconds": round(max(steps), 2) if steps else None,
        "resultsInvocations": len(steps),
        "byStatus": document["byStatus"],
        "latencyP50Seconds": document["latencySeconds"]["p50"],
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    args = parser(__doc__.splitlines()[0]).parse_args()
    lines, small, large = (20, 200, 2_000) if args.smoke else (1_000, 10_000, 100_000)
    e2e = end_to_end(lines)
    steps = {
        f"{small:,} lines seeded": results_step(small, served=False),
        f"{small:,} lines served": results_step(small, served=True),
        f"{large:,} lines served": results_step(large, served=True),
    }
    growth = steps[f"{large:,} lines served"]["tracedPeakMB"] / max(
        steps[f"{small:,} lines served"]["tracedPeakMB"], 0.1
    )
    rows = [
        (f"{lines}-line batch: upload to summary, s", e2e["uploadToSummarySeconds"], "the whole pipeline"),
        (
            f"{lines}-line batch: results step, s",
            e2e["resultsStepSeconds"],
            "BatchResultsFunction's invocation",
        ),
    ]
    for name, figures in steps.items():
        rows.append((f"{name}: results step, s", figures["seconds"], f"results {figures['resultsMB']} MB"))
        rows.append(
            (f"{name}: traced peak, MB", figures["tracedPeakMB"], f"RSS growth {figures['rssGrowthMB']} MB")
        )
    rows.append((f"peak memory {large:,} / {small:,} lines", round(growth, 2), "~1: bounded (streamed)"))
    emit("batches", rows, {"endToEnd": e2e, "resultsStep": steps, "peakRatio": round(growth, 2)}, args.smoke)


if __name__ == "__main__":
    main()
