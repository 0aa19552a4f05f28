"""Soak (issue 17, section 4): N jobs through the local stack with provider AND AWS faults at once.

    .venv/bin/python bench/soak.py                 # 10,000 jobs (about an hour on 2 cores)
    .venv/bin/python bench/soak.py --jobs 2000
    .venv/bin/python bench/soak.py --smoke         # 12 jobs, for the test suite
    .venv/bin/python bench/soak.py --log-file soak.log --log-level INFO   # the functions' logs kept

The provider faults are the `faults` suite's at half its rates (5xx on submit and poll, 429 with
Retry-After, failed tasks, hung reads, responses lost after the provider accepted the task) and a
hundredth of the tasks outlive the deadline (TIMED_OUT); the AWS faults are the `aws-faults` suite's
(5 % throttled, 2 % 5xx, 1 % reset after sending, on every AWS call: the functions', the SQS
pollers' and the Step Functions engine's). A tenth of the jobs come in as one JSONL upload.

Figures: wall time and jobs/s, the peak memory of every process (the stack's own process: moto's
server, the Step Functions engine, the SQS pollers and the simulator; and each function's
execution environments, one process each), and the invariants of the reliability suites: 0 lost,
0 submitted twice, the credits identity, no orphaned or missing S3 objects.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import emit, parser, peak_rss_mb, rss_mb, stack_pids

from imagejobs_tools.reliability.report import SuiteReport
from imagejobs_tools.reliability.stacksuites import (
    AWS_FAULTS,
    READ_TIMEOUT_SECONDS,
    Harness,
    _wait_settled,
    analyse,
    check_batch,
    check_outputs,
    collect,
    job_body,
    running_stack,
)
from imagejobs_tools.reliability.suites import _fake_aws_credentials

# Half the `faults` suite's rates: both kinds of fault at once, on every job's path.
PROVIDER_FAULTS = {
    "submit_500_rate": 0.1,
    "poll_500_rate": 0.1,
    "rate_429": 0.05,
    "retry_after": 1,
    "task_failure_rate": 0.025,
    "hang_rate": 0.01,
    "hang_seconds": READ_TIMEOUT_SECONDS + 2,
    "lost_response_rate": 0.01,
}
UNSET_PROVIDER_FAULTS = {k: 0 for k in PROVIDER_FAULTS if k not in ("retry_after", "hang_seconds")}
SAMPLE_SECONDS = 5.0
UPLOADS_VISIBILITY_SECONDS = 960
SOAK_BATCH = "batches/soak.jsonl"
STACK = "stack process"


@dataclass
class ProcessMemory:
    """Every SAMPLE_SECONDS: each process's peak RSS (VmHWM) by what it runs, and the most the
    stack's processes held together."""

    peak_by_pid: dict[int, float] = field(default_factory=dict)
    label_by_pid: dict[int, str] = field(default_factory=dict)
    peak_total_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def sample(self) -> None:
        total = 0.0
        for pid in stack_pids():
            peak = peak_rss_mb(pid)
            if not peak:
                continue  # gone since it was listed
            total += rss_mb(pid)
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0.0), peak)
            self.label_by_pid.setdefault(pid, _label(pid))
        self.peak_total_mb = max(self.peak_total_mb, total)

    def by_label(self) -> dict[str, dict[str, float]]:
        grouped: dict[str, list[float]] = {}
        for pid, peak in self.peak_by_pid.items():
            grouped.setdefault(self.label_by_pid[pid], []).append(peak)
        return {
            label: {
                "processes": len(peaks),
                "peakMBEach": round(max(peaks), 1),
                "peakMBSum": round(sum(peaks), 1),
            }
            for label, peaks in sorted(grouped.items())
        }


def _label(pid: int) -> str:
    """The function an execution environment runs (its Lambda environment says), else what it is."""
    if pid == stack_pids()[0]:
        return STACK
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "other"
    for entry in environ:
        if entry.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
            # <stack>-<LogicalId>-<suffix>, as CloudFormation names them: the logical id says it.
            return entry.partition(b"=")[2].decode().split("-")[-2]
    return "other"


def run_soak(
    size: int, seed: int = 17, log_file: Path | None = None, log_level: str = "WARNING"
) -> tuple[SuiteReport, ProcessMemory, dict[str, Any]]:
    rng = random.Random(seed)
    report = SuiteReport("soak")
    job_ids = [f"soak-{n:05d}" for n in range(size)]
    slow = set(rng.sample(job_ids, max(1, size // 100)))
    batch_jobs = set(job_ids[: max(1, size // 10)])
    bodies = {
        j: job_body("soak", j, **({"providerInput": {"simLatencySeconds": 600}} if j in slow else {}))
        for j in job_ids
    }
    memory = ProcessMemory()
    sampler = threading.Thread(target=memory.run, name="soak-memory", daemon=True)
    timings: dict[str, Any] = {}
    started = time.perf_counter()
    with running_stack(
        f"sk_test_soak_{rng.getrandbits(48):012x}",
        # A failed upload event comes back after its visibility timeout (AWS: 5,400 s). Scaled down so a
        # faulted batch is retried within the soak, but not below S3IntakeFunction's timeout (900 s),
        # which AWS refuses for an SQS event source: shorter, the event comes back while the batch is
        # still being read, again and again, and goes to the DLQ (the first two runs, at 2 s and 300 s).
        parameters={
            "MaxWaitImageSeconds": "25",
            "UploadsVisibilityTimeoutSeconds": str(UPLOADS_VISIBILITY_SECONDS),
            "LogLevel": log_level,
        },
        aws_faults=AWS_FAULTS,
        log_file=log_file,
    ) as h:
        timings["stackReadySeconds"] = round(time.perf_counter() - started, 1)
        sampler.start()
        h.sim.set_faults(**PROVIDER_FAULTS)
        sent_at = time.perf_counter()
        h.upload_batch(SOAK_BATCH, [bodies[j] for j in job_ids if j in batch_jobs])
        # The batch is read before the queue fills: on moto, reading it while 9,000 queued messages
        # were received ran at ~6 s a line (every ReceiveMessage walks the whole queue), not on AWS.
        timings["batchReadSeconds"] = _wait_batch_read(h, timeout=900)
        h.send([bodies[j] for j in job_ids if j not in batch_jobs])
        timings["sendSeconds"] = round(time.perf_counter() - sent_at, 1)
        _wait_submitted(h, size, timeout=300 + size * 1.5)
        settled = _wait_settled(h, job_ids, timeout=300 + size * 0.5)
        timings["settledSeconds"] = round(time.perf_counter() - sent_at, 1)
        h.stack.aws_faults.set_rules(())  # the figures are read without faults
        # Where unsettled jobs would be: a message still queued is slow, not lost.
        timings["queueDepthsAtSettle"] = {
            name: h.queue_depth(name)
            for name in ("JobsQueueUrl", "JobsDeadLetterQueueUrl", "UploadsQueueUrl")
        }
        h.sim.set_faults(**UNSET_PROVIDER_FAULTS)
        aws_injected = h.stack.aws_faults.injected()
        provider_injected = h.sim.stats().get("faultsInjected")
        ledger = collect(h)
        check_outputs(report, h, ledger)
        check_batch(report, h, SOAK_BATCH, [j for j in job_ids if j in batch_jobs], timeout=300)
        memory.stop()
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    by_kind: Counter[str] = Counter()
    for kinds in aws_injected.values():
        by_kind.update(kinds)
    report.extra["AWS faults injected"] = dict(by_kind)
    report.extra["provider faults injected"] = provider_injected
    report.check("settled before the timeout", settled)
    return report, memory, timings


def _wait_batch_read(h: Harness, timeout: float) -> float | None:
    """Seconds until the batch's intake report says COMPLETE (None: not within the timeout)."""
    started = time.perf_counter()

    def complete() -> bool:
        try:
            body = h.s3.get_object(Bucket=h.outputs["OutputBucketName"], Key=SOAK_BATCH + ".report.json")[
                "Body"
            ]
        except h.s3.exceptions.NoSuchKey:
            return False
        return bool(json.loads(body.read()).get("status") == "COMPLETE")

    return round(time.perf_counter() - started, 1) if h.wait(complete, timeout, interval=2.0) else None


def _wait_submitted(h: Harness, size: int, timeout: float) -> None:
    """Until the provider has a task per job, or both queues are empty (cheap: no table scan);
    progress on stderr every minute."""
    started = time.monotonic()
    last_report = started

    def done() -> bool:
        nonlocal last_report
        tasks = int(h.sim.stats().get("tasks", 0))
        if time.monotonic() - last_report >= 60:
            last_report = time.monotonic()
            print(f"soak: {tasks} of {size} submitted after {last_report - started:.0f} s", file=sys.stderr)
        empty = h.queue_depth("JobsQueueUrl") == 0 and h.queue_depth("UploadsQueueUrl") == 0
        return tasks >= size or empty

    h.wait(done, timeout, interval=10.0)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, help="jobs (default 10,000; smoke 12)")
    p.add_argument("--log-file", type=Path, help="append the functions' log lines here as they come")
    p.add_argument("--log-level", default="WARNING", help="the functions' LogLevel (default WARNING)")
    args = p.parse_args()
    size = args.jobs or (12 if args.smoke else 10_000)
    _fake_aws_credentials()
    report, memory, timings = run_soak(size, log_file=args.log_file, log_level=args.log_level)
    processes = memory.by_label()
    rows: list[tuple[str, Any, str]] = [
        ("jobs", size, f"terminal states: {report.terminal}"),
        ("wall seconds (stack start to stop)", round(report.wall_seconds, 1), ""),
        ("send to all settled, seconds", timings["settledSeconds"], ""),
        ("jobs/s (send to settled)", round(size / max(timings["settledSeconds"], 0.001), 2), ""),
        ("lost", report.lost, "0"),
        ("submitted twice", report.duplicates, "0"),
        ("in the DLQ", report.dlq, "each with a reason"),
        ("credits spent / refunded", f"{report.credits_spent} / {report.credits_refunded}", ""),
        ("peak RSS of the stack's processes together, MB", round(memory.peak_total_mb, 1), ""),
    ]
    rows.extend(
        (f"peak RSS {label}, MB", figures["peakMBEach"], f"{figures['processes']:.0f} process(es)")
        for label, figures in processes.items()
    )
    rows.extend((f"[{'x' if held else ' '}] {name}", "", "") for name, held in report.checks.items())
    emit(
        "soak",
        rows,
        {
            "jobs": size,
            "report": report.to_json(),
            "timings": timings,
            "jobsPerSecond": round(size / max(timings["settledSeconds"], 0.001), 3),
            "peakTotalRssMB": round(memory.peak_total_mb, 1),
            "processes": processes,
            "providerFaults": PROVIDER_FAULTS,
        },
        args.smoke,
    )
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
