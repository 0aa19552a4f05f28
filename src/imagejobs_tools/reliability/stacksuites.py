"""Suites on the local stack: duplicates, provider faults, crashes, account trouble, AWS faults.

Jobs go in through the public SQS endpoint; figures come from the records (DynamoDB), the
DLQ and the simulator's own ledger and task list. Every job carries a unique prompt
(`<suite> job <jobId>: ...`) so each provider task is traced back to its job.

Time is scaled down (documented in docs/reliability.md): visibility timeout 2 s, the intake
claim lease 4 s, the provider read timeout 2 s and API-key cache 1 s are set from outside
the product code (template parameters, or `worker_plugins.scale_timers` in each function's
execution environment).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer
from imagejobs.batches import BATCH_KEY_PREFIX
from imagejobs.store import TERMINAL

from imagejobs_tools.local.aws_faults import ENGINE, FaultRule
from imagejobs_tools.local.logview import FunctionLogLine
from imagejobs_tools.local.workers import WorkerPlugin
from imagejobs_tools.reliability.logcapture import find_secret
from imagejobs_tools.reliability.report import SuiteReport
from imagejobs_tools.reliability.worker_plugins import CRASH_POINTS, crashes_fired

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from imagejobs_tools.local.stack import LocalStack

REPO = Path(__file__).resolve().parents[3]
PROMPT_RE = re.compile(r"^\S+ job (?P<job>[A-Za-z0-9_-]+):")
FAILURE_CODES = ("EMPTY_RESULT", "STORAGE_ERROR", "PROVIDER_NSFW_BLOCKED")
READ_TIMEOUT_SECONDS = 2.0
LEASE_SECONDS = 4.0
VISIBILITY_SECONDS = 2
DUPLICATES_BATCH = "batches/duplicates.jsonl"
CRASHES_BATCH = "batches/crashes.jsonl"
AWS_FAULTS_BATCH = "batches/aws-faults.jsonl"
KEY_CACHE_SECONDS = 1


@dataclass
class Harness:
    stack: LocalStack
    api_key: str
    sqs: SQSClient = field(init=False)
    ddb: DynamoDBClient = field(init=False)
    s3: S3Client = field(init=False)
    secrets: SecretsManagerClient = field(init=False)
    outputs: dict[str, str] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)  # everything the functions wrote

    def __post_init__(self) -> None:
        self.sqs = self.stack.client("sqs")
        self.ddb = self.stack.client("dynamodb")
        self.s3 = self.stack.client("s3")
        self.secrets = self.stack.client("secretsmanager")
        self.outputs = dict(self.stack.info.outputs)

    @property
    def sim(self) -> Any:
        return self.stack.simulator.admin

    def logs(self) -> str:
        return "\n".join(self.log_lines)

    def send(self, bodies: list[dict[str, Any]]) -> None:
        queue = self.outputs["JobsQueueUrl"]
        for start in range(0, len(bodies), 10):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": json.dumps(body)}
                for n, body in enumerate(bodies[start : start + 10])
            ]
            failed = self.sqs.send_message_batch(QueueUrl=queue, Entries=entries).get("Failed")
            if failed:
                raise RuntimeError(f"SendMessageBatch failed: {failed}")

    def records(self) -> dict[str, dict[str, Any]]:
        """Every job record by id (the table's budget and batch items left out)."""
        return {k: v for k, v in self._items().items() if not k.startswith((BATCH_KEY_PREFIX, "budget#"))}

    def batch_items(self) -> dict[str, dict[str, Any]]:
        """Every batch item by batch id (docs/batches.md)."""
        return {str(v["batchId"]): v for k, v in self._items().items() if k.startswith(BATCH_KEY_PREFIX)}

    def _items(self) -> dict[str, dict[str, Any]]:
        deserializer = TypeDeserializer()
        found: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"TableName": self.outputs["JobsTableName"], "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            for item in page["Items"]:
                record = {key: deserializer.deserialize(value) for key, value in item.items()}
                found[str(record["jobId"])] = record
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def upload_batch(
        self, key: str, bodies: list[dict[str, Any]], metadata: dict[str, str] | None = None
    ) -> None:
        """A JSONL batch uploaded under the batches prefix (S3 → UploadsQueue → S3IntakeFunction),
        with the object's user ``metadata`` (x-amz-meta-…)."""
        self.s3.put_object(
            Bucket=self.outputs["OutputBucketName"],
            Key=key,
            Body="".join(json.dumps(body) + "\n" for body in bodies).encode(),
            Metadata=metadata or {},
        )

    def redeliver_upload_event(self, key: str) -> None:
        """The batch's S3 event once more (S3 notifications are at least once)."""
        head = self.s3.head_object(Bucket=self.outputs["OutputBucketName"], Key=key)
        record = {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": self.outputs["OutputBucketName"]},
                "object": {"key": key, "eTag": head["ETag"].strip('"'), "size": head["ContentLength"]},
            },
        }
        self.sqs.send_message(
            QueueUrl=self.outputs["UploadsQueueUrl"], MessageBody=json.dumps({"Records": [record]})
        )

    def queue_depth(self, name: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.outputs[name],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def drain_dlq(self) -> list[dict[str, Any]]:
        """Every DLQ message (removed), as {"jobId", "body", "receives"}."""
        drained: list[dict[str, Any]] = []
        queue = self.outputs["JobsDeadLetterQueueUrl"]
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return drained
            for message in messages:
                try:
                    job_id = json.loads(message["Body"]).get("jobId")
                except ValueError:
                    job_id = None
                drained.append(
                    {
                        "jobId": job_id,
                        "body": message["Body"],
                        "receives": message.get("Attributes", {}).get("ApproximateReceiveCount"),
                    }
                )
                self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    def webhook_dead_letters(self) -> dict[str, str]:
        """webhook-id -> reason, for every delivery on WebhookDeadLetterQueue (read, not deleted)."""
        found: dict[str, str] = {}
        url = self.outputs["WebhookDeadLetterQueueUrl"]
        for _ in range(3):
            for message in self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
            ).get("Messages", []):
                reason = message["MessageAttributes"]["reason"]["StringValue"]
                found[json.loads(message["Body"])["webhookId"]] = reason
        return found

    def set_api_key(self, key: str) -> None:
        self.secrets.put_secret_value(SecretId=self.outputs["ApiKeySecretArn"], SecretString=key)
        time.sleep(KEY_CACHE_SECONDS + 0.5)  # the functions' key cache (scaled down) has expired

    def output_keys(self) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.outputs["OutputBucketName"]
        ):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def tagged_for_expiry(self, keys: list[str]) -> list[str]:
        """Which of `keys` carry the copier's orphan tag (the lifecycle rule would delete them)."""
        from imagejobs.copier import ORPHAN_TAG

        bucket = self.outputs["OutputBucketName"]
        return [
            key
            for key in keys
            if any(
                tag["Key"] == ORPHAN_TAG
                for tag in self.s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            )
        ]

    def wait(self, predicate: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()


@contextlib.contextmanager
def running_stack(
    api_key: str,
    *,
    credits: int = 1_000_000,
    parameters: dict[str, str] | None = None,
    sqs_concurrency: int = 5,
    plugins: tuple[WorkerPlugin, ...] = (),
    aws_faults: tuple[FaultRule, ...] = (),
    allow_hosts: tuple[str, ...] = (),
    timeouts: dict[str, int] | None = None,
    log_file: Path | None = None,
) -> Iterator[Harness]:
    """A local stack of template.yaml with the suites' scaled-down timers; the functions' log lines
    are kept in the harness and, with `log_file`, also appended there as they come (a run that is
    stopped keeps them)."""
    from imagejobs_tools.local.stack import LocalStack, LocalStackConfig

    timers = WorkerPlugin(
        "imagejobs_tools.reliability.worker_plugins:scale_timers",
        {
            "readTimeoutSeconds": READ_TIMEOUT_SECONDS,
            "leaseSeconds": LEASE_SECONDS,
            "keyCacheSeconds": KEY_CACHE_SECONDS,
        },
    )
    log_lines: list[str] = []
    log_stream = contextlib.ExitStack()
    written = (
        log_stream.enter_context(log_file.open("a", encoding="utf-8", buffering=1)) if log_file else None
    )

    writing = threading.Lock()  # the pools' reader threads write at once

    def keep(line: FunctionLogLine) -> None:
        log_lines.append(line.text)  # list.append is atomic
        if written is not None:
            with writing:
                written.write(f"{line.time:.3f} {line.logical_id} {line.request_id or '-'} {line.text}\n")

    config = LocalStackConfig(
        template_path=REPO / "template.yaml",
        stack_name="imagejobs-reliability",
        poll_interval_seconds=0,
        sim_latency=(0.0, 0.05),
        api_key=api_key,
        api_key_credits=credits,
        parameter_overrides={
            "QueueVisibilityTimeoutSeconds": str(VISIBILITY_SECONDS),
            "LogLevel": "WARNING",
            **(parameters or {}),
        },
        environment_overrides={"POWERTOOLS_METRICS_DISABLED": "true"},
        sqs_concurrency=sqs_concurrency,
        worker_plugins=(timers, *plugins),
        aws_faults=aws_faults,
        extra_allow_hosts=allow_hosts,
        timeout_overrides=dict(timeouts or {}),
        log_sink=keep,
    )
    with log_stream, LocalStack(config) as stack:
        yield Harness(stack, api_key, log_lines=log_lines)


def job_body(suite: str, job_id: str, **extra: Any) -> dict[str, Any]:
    return {"jobId": job_id, "prompt": f"{suite} job {job_id}: a lighthouse at dawn", **extra}


@dataclass
class Ledger:
    """The run's outcome, joined across records, DLQ and the simulator."""

    records: dict[str, dict[str, Any]]
    dlq: list[dict[str, Any]]
    tasks_by_job: dict[str, list[dict[str, Any]]]
    key_stats: dict[str, Any]


def collect(h: Harness) -> Ledger:
    tasks_by_job: dict[str, list[dict[str, Any]]] = {}
    for task in h.sim.tasks():
        match = PROMPT_RE.match(str(task.get("prompt") or ""))
        tasks_by_job.setdefault(match.group("job") if match else "?", []).append(task)
    return Ledger(h.records(), h.drain_dlq(), tasks_by_job, h.sim.key_stats(h.api_key))


def analyse(report: SuiteReport, job_ids: list[str], ledger: Ledger) -> None:
    """Fill the standard figures and check the invariants every suite shares."""
    dlq_ids = {str(m["jobId"]) for m in ledger.dlq}
    statuses = {job: ledger.records.get(job, {}).get("status") for job in job_ids}
    report.jobs_sent = len(job_ids)
    report.terminal = dict(Counter(s for s in statuses.values() if s in TERMINAL))
    non_terminal = Counter(str(s) for j, s in statuses.items() if s not in TERMINAL and j not in dlq_ids)
    if non_terminal:
        report.extra["not terminal"] = dict(non_terminal)
    report.dlq = len(ledger.dlq)
    lost = sorted(j for j, s in statuses.items() if s not in TERMINAL and j not in dlq_ids)
    report.lost = len(lost)
    if lost:
        report.extra["lost jobs (first 50)"] = lost[:50]
    tasks = [t for job in job_ids for t in ledger.tasks_by_job.get(job, [])]
    strays = sum(len(v) for k, v in ledger.tasks_by_job.items() if k not in set(job_ids))
    report.provider_tasks = len(tasks) + strays
    report.duplicates = sum(max(0, len(ledger.tasks_by_job.get(job, [])) - 1) for job in job_ids)
    report.credits_spent = int(ledger.key_stats["spent"])
    report.credits_refunded = int(ledger.key_stats["refunded"])

    def task_credits(status: str) -> int:
        return sum(
            int(t.get("creditsUsed") or 0)
            for job, s in statuses.items()
            if s == status
            for t in ledger.tasks_by_job.get(job, [])
            if not t.get("creditsRefunded")
        )

    completed = task_credits("COMPLETED")
    unknown = task_credits("SUBMIT_UNKNOWN")
    timed_out = task_credits("TIMED_OUT")
    report.extra["credits by outcome"] = {
        "completed": completed,
        "refunded": report.credits_refunded,
        "submitUnknown": unknown,
        "timedOut (task still charged)": timed_out,
    }
    report.check("0 lost (every job terminal or in the DLQ)", report.lost == 0)
    report.check(
        "nothing submitted twice (<= 1 provider task per job)", report.duplicates == 0 and strays == 0
    )
    report.check(
        "credits spent = completed + refunded + SUBMIT_UNKNOWN + TIMED_OUT",
        report.credits_spent == completed + report.credits_refunded + unknown + timed_out,
    )
    mismatched = [
        job
        for job, s in statuses.items()
        if s == "COMPLETED"
        and [t.get("taskId") for t in ledger.tasks_by_job.get(job, [])] != [ledger.records[job].get("taskId")]
    ]
    report.check("every COMPLETED record names its one provider task", not mismatched)
    # A message can reach the DLQ while its job finished anyway (received 5 times while another worker
    # held the claim): such copies are counted apart; only unfinished DLQ jobs must be uncharged.
    finished_copies = {j for j in dlq_ids if statuses.get(j) in TERMINAL}
    report.extra["DLQ copies of finished jobs"] = len(finished_copies)
    charged_dlq = [
        j
        for j in dlq_ids - finished_copies
        if any(not t.get("creditsRefunded") for t in ledger.tasks_by_job.get(j, []))
    ]
    report.check("no DLQ job was charged", not charged_dlq)


def check_outputs(report: SuiteReport, h: Harness, ledger: Ledger) -> None:
    """Every stored object belongs to a COMPLETED record, and every recorded output exists once."""
    keys = [k for k in h.output_keys() if not k.startswith(("inputs/", "batches/", "recipes/"))]
    recorded = [
        str(output["key"])
        for record in ledger.records.values()
        if record.get("status") == "COMPLETED"
        for output in record.get("outputs") or []
    ]
    orphans = sorted(set(keys) - set(recorded))
    missing = sorted(set(recorded) - set(keys))
    report.extra["S3 objects"] = len(keys)
    report.check("no orphaned S3 objects", not orphans)
    report.check(
        "no recorded output missing from S3, none recorded twice",
        not missing and len(recorded) == len(set(recorded)),
    )
    expiring = h.tagged_for_expiry(recorded)
    report.check("no recorded output is tagged for expiry (imagejobs-orphan)", not expiring)
    if orphans:
        report.notes.append(f"orphans (first 5): {orphans[:5]}")
    if expiring:
        report.notes.append(f"recorded outputs tagged for expiry (first 5): {expiring[:5]}")


def check_batch(report: SuiteReport, h: Harness, key: str, job_ids: list[str], timeout: float = 90) -> None:
    """The batch uploaded at ``key``: exactly one results file and one summary, whose lines and
    counts are what the records of its jobs say (docs/batches.md)."""
    bucket = h.outputs["OutputBucketName"]
    stem = key.removesuffix(".jsonl")
    results_key, summary_key = f"{stem}.results.jsonl", f"{stem}.summary.json"

    def versions(of: str) -> int:
        return len(h.s3.list_object_versions(Bucket=bucket, Prefix=of).get("Versions") or [])

    written = h.wait(lambda: versions(summary_key) > 0, timeout)
    report.check("the batch's results and summary were written", written)
    if not written:
        items = list(h.batch_items().values())
        report.notes.append(
            f"batch items: {[(i.get('batchStatus'), i.get('done'), i.get('expected')) for i in items]}"
        )
        return
    summary = json.loads(h.s3.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
    lines = [
        json.loads(line)
        for line in h.s3.get_object(Bucket=bucket, Key=results_key)["Body"].read().splitlines()
    ]
    records = h.records()
    batch_records = {j: records.get(j, {}) for j in job_ids}
    report.check(
        "exactly one results file and one summary (no second version)",
        versions(results_key) == 1 and versions(summary_key) == 1,
    )
    report.check(
        "the results list every line once, in order, as its record says",
        [entry["jobId"] for entry in lines] == job_ids
        and all(entry["status"] == batch_records[entry["jobId"]].get("status") for entry in lines),
    )
    counted = dict(Counter(str(r.get("status")) for r in batch_records.values()))
    report.check(
        "the summary's counts are the records'",
        summary["byStatus"] == counted and summary["jobs"] == len(job_ids),
    )
    report.extra["batch summary"] = {"jobs": summary["jobs"], "byStatus": summary["byStatus"]}


def _wait_settled(h: Harness, job_ids: list[str], timeout: float) -> bool:
    """Until every job is terminal, or the jobs queue is empty and what is left is RECEIVED (released,
    its message dead-lettered), unchanged for a quiet period longer than any retry back-off."""
    quiet_seconds = 45.0
    # Each check scans the table: not too often (10,000 records take seconds of moto's time).
    interval = 1.0 if len(job_ids) <= 50 else max(5.0, len(job_ids) / 500)
    last: dict[str, Any] = {"snapshot": None, "since": time.monotonic()}

    def settled() -> bool:
        records = h.records()
        pending = {j: records.get(j, {}) for j in job_ids if records.get(j, {}).get("status") not in TERMINAL}
        if not pending:
            return True
        snapshot = sorted((j, str(r.get("status")), str(r.get("updatedAt"))) for j, r in pending.items())
        if snapshot != last["snapshot"]:
            last.update(snapshot=snapshot, since=time.monotonic())
            return False
        return (
            all(r.get("status") == "RECEIVED" for r in pending.values())
            and h.queue_depth("JobsQueueUrl") == 0
            and h.queue_depth("JobsDeadLetterQueueUrl") >= len(pending)
            and time.monotonic() - last["since"] >= quiet_seconds
        )

    return h.wait(settled, timeout, interval=interval)


# ---------------------------------------------------------------------------- suite 1


def run_duplicates(size: int, seed: int = 1) -> SuiteReport:
    """Each message delivered 1-3 times, visibility expiring mid-processing, then 10% re-sent by jobId."""
    rng = random.Random(seed)
    report = SuiteReport("duplicates")
    job_ids = [f"dup-{n:05d}" for n in range(size)]
    resend = max(1, size // 10)
    slow = set(rng.sample(job_ids, max(1, size // 20)))
    # Longer than the visibility timeout: SQS hands the message to another worker meanwhile.
    slow_claims = WorkerPlugin(
        "imagejobs_tools.reliability.worker_plugins:slow_claims",
        {"jobIds": sorted(slow), "seconds": VISIBILITY_SECONDS + 0.5},
    )
    started = time.perf_counter()
    # A tenth come in as one JSONL upload whose S3 event is delivered twice (only that way: a line
    # naming a job id the queue already made is a clash, recorded REJECTED, docs/batches.md).
    batch_jobs = job_ids[: max(2, size // 10)]
    with running_stack(f"sk_test_dup_{rng.getrandbits(48):012x}", plugins=(slow_claims,)) as h:
        h.upload_batch(DUPLICATES_BATCH, [job_body("dup", j) for j in batch_jobs])
        queued = [j for j in job_ids if j not in set(batch_jobs)]
        bodies = [job_body("dup", j) for j in queued for _ in range(rng.randint(1, 3))]
        rng.shuffle(bodies)
        h.send(bodies)
        h.redeliver_upload_event(DUPLICATES_BATCH)
        settled = _wait_settled(h, job_ids, timeout=120 + size * 1.2)
        again = [
            job_body("dup", j) | {"prompt": f"dup job {j}: re-sent, different"} for j in job_ids[:resend]
        ]
        h.send(again)
        h.wait(lambda: h.queue_depth("JobsQueueUrl") == 0, 60)
        time.sleep(VISIBILITY_SECONDS + 1)
        ledger = collect(h)
        check_outputs(report, h, ledger)
        check_batch(report, h, DUPLICATES_BATCH, batch_jobs)
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    report.extra["messages sent"] = len(bodies) + len(again)
    report.extra["re-sent by jobId"] = len(again)
    report.extra["slowed past visibility"] = len(slow)
    report.check("settled before the timeout", settled)
    report.check("provider tasks == jobs", report.provider_tasks == size)
    report.check("records == jobs", len(ledger.records) == size)
    report.check("all COMPLETED", report.terminal.get("COMPLETED", 0) == size)
    return report


# ---------------------------------------------------------------------------- suite 2


def run_faults(size: int, seed: int = 2) -> SuiteReport:
    rng = random.Random(seed)
    report = SuiteReport("faults")
    job_ids = [f"flt-{n:05d}" for n in range(size)]
    # A few tasks outlive the deadline (MaxWaitImageSeconds below): TIMED_OUT.
    slow = set(rng.sample(job_ids, max(1, size // 100)))
    faults = {
        "submit_500_rate": 0.2,
        "poll_500_rate": 0.2,
        "rate_429": 0.1,
        "retry_after": 1,
        "task_failure_rate": 0.05,
        "hang_rate": 0.02,
        "hang_seconds": READ_TIMEOUT_SECONDS + 2,
        "lost_response_rate": 0.02,
    }
    started = time.perf_counter()
    with running_stack(
        f"sk_test_flt_{rng.getrandbits(48):012x}", parameters={"MaxWaitImageSeconds": "25"}
    ) as h:
        h.sim.set_faults(**faults)
        h.send(
            [
                job_body("flt", j, **({"providerInput": {"simLatencySeconds": 600}} if j in slow else {}))
                for j in job_ids
            ]
        )
        settled = _wait_settled(h, job_ids, timeout=180 + size * 1.5)
        h.sim.set_faults(**{k: 0 for k in faults if k not in ("retry_after", "hang_seconds")})
        stats = h.sim.stats()
        ledger = collect(h)
        check_outputs(report, h, ledger)
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    report.extra["faults set"] = faults
    report.extra["faults injected"] = stats.get("faultsInjected")
    failed_codes = Counter(
        str((r.get("error") or {}).get("code"))
        for j, r in ledger.records.items()
        if r.get("status") == "FAILED"
    )
    report.extra["FAILED by code"] = dict(failed_codes)
    provider_failed = [
        j
        for j, r in ledger.records.items()
        if r.get("status") == "FAILED" and (r.get("error") or {}).get("source") == "provider"
    ]
    wrong_codes = [
        j
        for j in provider_failed
        if [t.get("errorCode") for t in ledger.tasks_by_job.get(j, [])]
        != [(ledger.records[j].get("error") or {}).get("code")]
    ]
    report.check("settled before the timeout", settled)
    report.check("provider-FAILED records carry the provider's code", not wrong_codes)
    report.check(
        "each documented failure code seen", all(code in failed_codes for code in FAILURE_CODES) or size < 60
    )
    dlq_reasons = [
        j
        for j in {str(m["jobId"]) for m in ledger.dlq}
        if (ledger.records.get(j) or {}).get("status") not in TERMINAL
        and not (ledger.records.get(j) or {}).get("lastSubmitError")
    ]
    report.check("every DLQ job's record says why (lastSubmitError)", not dlq_reasons)
    report.check("API key absent from the functions' logs", not find_secret({"logs": h.logs()}, h.api_key))
    report.check("simulator internal errors 0", int(stats.get("internalErrors", 0)) == 0)
    return report


# ---------------------------------------------------------------------------- suite 3


def run_crashes(size: int, seed: int = 3) -> SuiteReport:
    rng = random.Random(seed)
    report = SuiteReport("crashes")
    job_ids = [f"crs-{n:05d}" for n in range(size)]
    # Every crash point gets a quarter of the jobs; all jobs have two outputs so "mid-copy" is real.
    targets = {job: CRASH_POINTS[n % len(CRASH_POINTS)] for n, job in enumerate(job_ids)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imagejobs-crashes-") as markers:
        crashes = WorkerPlugin(
            "imagejobs_tools.reliability.worker_plugins:crashes", {"markers": markers, "targets": targets}
        )
        # A crash kills the intake's whole batch (as on AWS): every message in it is received again,
        # once per crash of any job it shares a batch with (up to 10 a batch), before its own lease
        # runs out. Redrive after more receives than that, so the figures are about crashes, not the DLQ.
        with running_stack(
            f"sk_test_crs_{rng.getrandbits(48):012x}",
            parameters={"JobsMaxReceiveCount": "15"},
            plugins=(crashes,),
        ) as h:
            # Every job comes in as one batch: its results must survive every crash (and the
            # change stream's consumer is killed too, before it counts a job).
            h.upload_batch(
                CRASHES_BATCH, [job_body("crs", j, providerInput={"simOutputCount": 2}) for j in job_ids]
            )
            settled = _wait_settled(h, job_ids, timeout=120 + size * 1.0)
            ledger = collect(h)
            check_outputs(report, h, ledger)
            check_batch(report, h, CRASHES_BATCH, job_ids)
            fired = crashes_fired(Path(markers))
            exits = sum(pool.stats.exits for pool in h.stack.dispatcher.pools.values())
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    report.extra["crashes fired"] = fired
    report.extra["execution environments killed (Runtime.ExitError)"] = exits
    by_point: dict[str, Counter[str]] = {point: Counter() for point in CRASH_POINTS}
    for job, point in targets.items():
        by_point[point][str(ledger.records.get(job, {}).get("status"))] += 1
    report.extra["outcome by crash point"] = {p: dict(c) for p, c in by_point.items()}
    report.check("settled before the timeout", settled)
    report.check("every crash point fired", all(fired[p] for p in CRASH_POINTS))
    report.check("every crash killed its execution environment", exits == sum(fired.values()))
    unflagged = [
        j for j, r in ledger.records.items() if r.get("status") not in ("COMPLETED", "SUBMIT_UNKNOWN")
    ]
    report.check("each crashed job COMPLETED or flagged SUBMIT_UNKNOWN", not unflagged)
    if unflagged:
        report.notes.append(
            "not completed/flagged: "
            + ", ".join(
                f"{j}={ledger.records[j].get('status')}/{(ledger.records[j].get('error') or {}).get('code')}"
                for j in unflagged[:6]
            )
        )
    return report


# ---------------------------------------------------------------------------- suite 4


def run_account(size: int, seed: int = 4) -> SuiteReport:
    """401 (wrong key) and 402 (empty balance): jobs wait in the queue, then run once it is fixed."""
    rng = random.Random(seed)
    report = SuiteReport("account")
    third = max(1, size // 3)
    wrong_key_jobs = [f"acc-401-{n:05d}" for n in range(third)]
    broke_jobs = [f"acc-402-{n:05d}" for n in range(third)]
    dlq_jobs = [f"acc-dlq-{n:05d}" for n in range(size - 2 * third)]
    api_key = f"sk_test_acc_{rng.getrandbits(48):012x}"
    phases: dict[str, Any] = {}
    started = time.perf_counter()
    with running_stack(api_key) as h:

        def seen_error(jobs: list[str], code: str) -> Callable[[], bool]:
            def check() -> bool:
                records = h.records()
                return all(
                    (records.get(j, {}).get("lastSubmitError") or {}).get("code") == code for j in jobs
                )

            return check

        # 401: a wrong key in the secret; the messages keep coming back; then the key is fixed.
        h.set_api_key(f"sk_test_wrong_{rng.getrandbits(32):08x}")
        h.send([job_body("acc", j) for j in wrong_key_jobs])
        phases["401 seen on every job"] = h.wait(seen_error(wrong_key_jobs, "ProviderUnauthorized"), 60, 0.5)
        phases["401 charged"] = int(h.sim.key_stats(api_key)["spent"])
        h.set_api_key(api_key)
        phases["401 jobs done after fix"] = h.wait(
            lambda: all(h.records().get(j, {}).get("status") in TERMINAL for j in wrong_key_jobs), 60
        )
        # 402: balance 0; then credits are added.
        balance = int(h.sim.key_stats(api_key)["balance"])
        h.sim.set_credits(api_key, 0)
        h.send([job_body("acc", j) for j in broke_jobs])
        phases["402 seen on every job"] = h.wait(seen_error(broke_jobs, "InsufficientCredits"), 60, 0.5)
        h.sim.set_credits(api_key, balance)
        phases["402 jobs done after top-up"] = h.wait(
            lambda: all(h.records().get(j, {}).get("status") in TERMINAL for j in broke_jobs), 60
        )
        # Left broken long enough to reach the DLQ (5 receives); the operator redrives after the fix.
        if dlq_jobs:
            h.set_api_key(f"sk_test_wrong_{rng.getrandbits(32):08x}")
            h.send([job_body("acc", j) for j in dlq_jobs])
            phases["in DLQ while broken"] = h.wait(
                lambda: h.queue_depth("JobsDeadLetterQueueUrl") >= len(dlq_jobs), 90
            )
            records = h.records()
            phases["DLQ records RECEIVED with reason"] = all(
                records.get(j, {}).get("status") == "RECEIVED" and records[j].get("lastSubmitError")
                for j in dlq_jobs
            )
            h.set_api_key(api_key)
            redriven = h.drain_dlq()
            h.send([json.loads(m["body"]) for m in redriven])
            phases["redriven"] = len(redriven)
            phases["DLQ jobs done after redrive"] = h.wait(
                lambda: all(h.records().get(j, {}).get("status") in TERMINAL for j in dlq_jobs), 60
            )
        ledger = collect(h)
    report.wall_seconds = time.perf_counter() - started
    job_ids = wrong_key_jobs + broke_jobs + dlq_jobs
    analyse(report, job_ids, ledger)
    report.extra["phases"] = phases
    report.check("nothing charged while the key was wrong", phases["401 charged"] == 0)
    report.check("every phase behaved (see phases)", all(v for k, v in phases.items() if k != "401 charged"))
    report.check("all jobs COMPLETED once fixed", report.terminal.get("COMPLETED", 0) == len(job_ids))
    report.check("provider tasks == jobs", report.provider_tasks == len(job_ids))
    keys = {"logs": h.logs(), "records": json.dumps(ledger.records, default=str)}
    report.extra["log bytes grepped"] = len(keys["logs"])
    report.check("API keys (right and wrong) absent from logs and records", not find_secret(keys, api_key))
    return report


# ---------------------------------------------------------------------------- suite 5

# The issue's plan: on every AWS operation the pipeline uses, 5 % throttled, 2 % 5xx, 1 % reset after
# the service did the work.
AWS_FAULTS = (FaultRule(throttle=0.05, server_error=0.02, reset_after_send=0.01),)
# Services every run must have faulted (the engine's in-process Lambda tasks are "lambda").
AWS_FAULTED_SERVICES = ("dynamodb", "s3", "sqs", "states", "secretsmanager", "lambda")


def run_aws_faults(size: int, seed: int = 5) -> SuiteReport:
    """AWS-side faults on every call of the functions, the SQS pollers and the Step Functions
    engine; a tenth of the jobs outlive a 2-s hand-over, so the engine's own ClaimHandOver
    (dynamodb:updateItem) and HandOver (states:startExecution) tasks meet the faults too, and a
    tenth come in as one JSONL batch upload (S3IntakeFunction: GetObject, SendMessageBatch)."""
    rng = random.Random(seed)
    report = SuiteReport("aws-faults")
    job_ids = [f"awf-{n:05d}" for n in range(size)]
    long_jobs = set(rng.sample(job_ids, max(2, size // 10)))
    batch_jobs = job_ids[: max(2, size // 10)]
    bodies = {
        j: job_body("awf", j, **({"providerInput": {"simLatencySeconds": 5}} if j in long_jobs else {}))
        for j in job_ids
    }
    started = time.perf_counter()
    with running_stack(
        f"sk_test_awf_{rng.getrandbits(48):012x}",
        # A failed upload event comes back after this (AWS: 5,400 s).
        parameters={"HandoverAfterSeconds": "2", "UploadsVisibilityTimeoutSeconds": str(VISIBILITY_SECONDS)},
        aws_faults=AWS_FAULTS,
    ) as h:
        h.upload_batch(AWS_FAULTS_BATCH, [bodies[j] for j in batch_jobs])
        h.send([bodies[j] for j in job_ids if j not in set(batch_jobs)])
        settled = _wait_settled(h, job_ids, timeout=180 + size * 1.5)
        # The batch's last steps (counting, results) run under the faults too, then are checked.
        check_batch(report, h, AWS_FAULTS_BATCH, batch_jobs, timeout=120)
        h.stack.aws_faults.set_rules(())  # the figures are read without faults
        injected = h.stack.aws_faults.injected()
        calls = h.stack.aws_faults.calls()
        ledger = collect(h)
        check_outputs(report, h, ledger)
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    by_kind: Counter[str] = Counter()
    by_service: Counter[str] = Counter()
    for operation, kinds in injected.items():
        for kind, count in kinds.items():
            by_kind[kind] += count
            by_service[operation.partition(".")[0]] += count
    report.extra["AWS faults injected"] = dict(by_kind)
    report.extra["AWS faults by service"] = dict(by_service)
    report.extra["AWS faults by operation"] = injected
    report.extra["AWS calls faultable"] = sum(calls.values())
    report.extra["FAILED by code"] = dict(
        Counter(
            str((r.get("error") or {}).get("code"))
            for r in ledger.records.values()
            if r.get("status") == "FAILED"
        )
    )
    report.check("settled before the timeout", settled)
    report.check(
        "every AWS service the pipeline uses was faulted",
        all(by_service[service] for service in AWS_FAULTED_SERVICES) or size < 100,
    )
    engine = {op for op in injected if op.endswith(f"({ENGINE})")}
    report.check(
        "the Step Functions engine's own calls were faulted (Lambda tasks, ClaimHandOver, HandOver)",
        {f"lambda.Invoke ({ENGINE})", f"states.StartExecution ({ENGINE})", f"dynamodb.UpdateItem ({ENGINE})"}
        <= engine
        or size < 100,
    )
    unexplained_dlq = [
        j
        for j in {str(m["jobId"]) for m in ledger.dlq}
        if (ledger.records.get(j) or {}).get("status") not in TERMINAL
        and not (ledger.records.get(j) or {}).get("lastSubmitError")
    ]
    report.check("every DLQ job's record says why (lastSubmitError)", not unexplained_dlq)
    if unexplained_dlq:
        report.notes.append(f"DLQ jobs without a reason: {sorted(unexplained_dlq)[:6]}")
    not_terminal = {j: (ledger.records.get(j) or {}).get("status") for j in job_ids}
    stuck = {j: s for j, s in not_terminal.items() if s not in TERMINAL}
    if stuck:
        report.notes.append(f"not terminal (first 6): {dict(list(stuck.items())[:6])}")
    return report
