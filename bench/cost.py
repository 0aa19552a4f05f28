"""Cost: AWS cost per 1,000 jobs (30-s images, 90-s videos, 2 s polling), computed from a local run's
real execution histories, Lambda invocations x measured duration x memory, DynamoDB writes and
reads, SQS requests and S3 PUTs, at us-east-1 list prices; STANDARD and EXPRESS side by side with
the AWS "Job Poller" sample's design (Wait -> Task -> Choice, Retry on every task), for the default
polling and each polling option (docs/polling.md), one fresh stack per option, all in one run.

    .venv/bin/python bench/cost.py            # 40 jobs per kind and option (~20 min)
    .venv/bin/python bench/cost.py --kinds image --options default,polls-15
    .venv/bin/python bench/cost.py --smoke    # 3 images of 8 s, default and polls-3

Each job's generation time is drawn from +-10 % around the kind's (simLatencySeconds), so that
FirstPollAfter=auto meets a spread; auto runs a warm-up wave first (the records it learns from),
and the jobs that finish before their first poll show its price: how much later they are detected.

Everything countable is counted in the run (state transitions from each execution's history,
every AWS API call made in the process, every Lambda invocation and its duration); only what a
local run cannot show is assumed, and each assumption is listed with the figures.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    REPO,
    Invocation,
    InvocationLog,
    RequestLog,
    count_aws_requests,
    emit,
    instrument_dispatcher,
    local_stack,
    parse_iso,
    parser,
    polling_option,
    scan_records,
    send_jobs,
    summary,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_stepfunctions.type_defs import HistoryEventTypeDef

POLL_INTERVAL = 2
# One prompt for every job: the simulator renders (and caches) each prompt's PNG, CPU that a real
# provider's CDN spends elsewhere; job ids keep the jobs apart.
PROMPT = "a lighthouse at dawn, benchmark"
TARGET_STANDARD, TARGET_EXPRESS = 1.30, 0.10
# Issue 19: an option at <= 0.5x the Job Poller sample's STANDARD cost.
TARGET_SAMPLE_RATIO = 0.5
SPREAD = 0.10  # generation time uniform on +-10 % of the kind's
# kind: (model, generation seconds, extra message fields)
WORKLOADS: dict[str, tuple[str, float, dict[str, Any]]] = {
    "image": ("gpt-image-2", 30.0, {}),
    "video": ("veo3_fast", 90.0, {"inputMode": "text_to_video", "duration": 8}),
}
FULL_OPTIONS = "default,first-poll-auto,polls-5,polls-15,first-poll-auto+polls-15"
SMOKE_OPTIONS = "default,polls-3"
AUTO_WARMUP_JOBS = 25  # > imagejobs.first_poll.AUTO_MIN_SAMPLES

# us-east-1 list prices (USD), November 2026 price pages; free tiers ignored.
PRICES = {
    "sfn_standard_transition": 0.025 / 1000,
    "sfn_express_request": 1.00 / 1_000_000,
    "sfn_express_gb_second": 0.00001667,
    "lambda_arm_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1_000_000,
    "dynamodb_wru": 0.625 / 1_000_000,
    "dynamodb_rru": 0.125 / 1_000_000,
    "sqs_request": 0.40 / 1_000_000,
    "s3_put": 0.005 / 1000,
    "secrets_call": 0.05 / 10_000,
    "logs_gb": 0.50,
    "xray_trace": 5.00 / 1_000_000,
}
ASSUMED = {
    "lambdaLogBytesPerInvocation": 1500,  # START/END/REPORT + ~2 Powertools JSON lines at INFO
    "expressLogBytesPerEvent": 350,  # one CloudWatch event per history event, no execution data
    "expressBilledMemoryMB": 64,  # Express bills memory in 64 MB chunks; these payloads are tiny
    "userSendsPerJob": 1,  # one SendMessage per job (SendMessageBatch would be 0.1)
    "tracesPerJob": 1,  # upper bound: X-Ray samples 1/s + 5% by default
}


def transitions(history: list[HistoryEventTypeDef]) -> int:
    """Billed state transitions: every state entered, plus every retry of a Task."""
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    task_entered = sum(1 for e in history if e["type"] == "TaskStateEntered")
    scheduled = sum(1 for e in history if e["type"] in {"TaskScheduled", "LambdaFunctionScheduled"})
    return entered + max(0, scheduled - task_entered)


def duration_seconds(history: list[HistoryEventTypeDef]) -> float:
    stamps = [e["timestamp"] for e in history]
    return (max(stamps) - min(stamps)).total_seconds()


def dynamodb_units(requests: dict[str, int], item_bytes: float, jobs: int) -> tuple[float, float]:
    """(WRU, RRU) per job. Writes are billed per started KB of the item; the GSI ByStatus projects
    ALL and every write changes its key (status/updatedAt): one delete + one put on the index."""
    kb = max(1, math.ceil(item_bytes / 1024))
    puts = requests.get("dynamodb.PutItem", 0) / jobs
    updates = requests.get("dynamodb.UpdateItem", 0) / jobs
    wru = puts * kb * 2 + updates * kb * 3  # base + GSI put (new item) / base + GSI delete + put
    reads = (requests.get("dynamodb.GetItem", 0) + requests.get("dynamodb.Query", 0)) / jobs
    rru = reads * max(1, math.ceil(item_bytes / 4096))  # strongly consistent: 1 RRU per 4 KB
    return wru, rru


def model(
    *,
    transitions_per_job: float,
    express_seconds: float,
    history_events: float,
    lambda_gb_seconds: float,
    lambda_calls: float,
    wru: float,
    rru: float,
    sqs_requests: float,
    s3_puts: float,
    secrets_calls: float,
) -> dict[str, dict[str, float]]:
    """USD per 1,000 jobs by component, for STANDARD and EXPRESS."""
    per_job_common = {
        "lambda": lambda_gb_seconds * PRICES["lambda_arm_gb_second"]
        + lambda_calls * PRICES["lambda_request"],
        "lambdaLogs": lambda_calls * ASSUMED["lambdaLogBytesPerInvocation"] / 1e9 * PRICES["logs_gb"],
        "dynamodb": wru * PRICES["dynamodb_wru"] + rru * PRICES["dynamodb_rru"],
        "sqs": sqs_requests * PRICES["sqs_request"],
        "s3": s3_puts * PRICES["s3_put"],
        "secretsManager": secrets_calls * PRICES["secrets_call"],
        "xray": ASSUMED["tracesPerJob"] * PRICES["xray_trace"],
    }
    billed_seconds = math.ceil(express_seconds * 10) / 10  # Express: 100 ms increments
    standard = {"stepFunctions": transitions_per_job * PRICES["sfn_standard_transition"], **per_job_common}
    express = {
        "stepFunctions": PRICES["sfn_express_request"]
        + billed_seconds * ASSUMED["expressBilledMemoryMB"] / 1024 * PRICES["sfn_express_gb_second"],
        "expressLogs": history_events * ASSUMED["expressLogBytesPerEvent"] / 1e9 * PRICES["logs_gb"],
        **per_job_common,
    }
    scale = lambda costs: {k: round(v * 1000, 4) for k, v in costs.items()}  # noqa: E731
    return {"STANDARD": scale(standard), "EXPRESS": scale(express)}


def state_machine_log_level(template: Path = REPO / "template.yaml") -> str:
    """The JobStateMachine's logging level as template.yaml declares it (OFF when it has none)."""
    from samtranslator.yaml_helper import yaml_parse

    properties = yaml_parse(template.read_text())["Resources"]["JobStateMachine"]["Properties"]
    return str((properties.get("Logging") or {}).get("Level", "OFF"))


def logged_events(history: list[HistoryEventTypeDef], level: str) -> int:
    if level == "ALL":
        return len(history)
    if level == "ERROR":
        return sum(e["type"].endswith(("Failed", "TimedOut", "Aborted")) for e in history)
    if level == "FATAL":
        return sum(e["type"] in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted") for e in history)
    return 0


@dataclass
class Measured:
    """One option on one kind: the per-job quantities the cost model prices."""

    option: str
    kind: str
    jobs: int
    generation: float
    records: list[dict[str, Any]]
    histories: list[list[HistoryEventTypeDef]]
    invocations: list[Invocation]
    memory_mb: dict[str, int]
    requests: dict[str, int]
    receives: int
    provider_done: dict[str, float]  # jobId: the simulator's completedAt
    first_poll_at: dict[str, float] = field(default_factory=dict)  # jobId: its first PollFunction start

    def per_function(self) -> dict[str, dict[str, float]]:
        grouped: dict[str, list[float]] = {}
        for event in self.invocations:
            grouped.setdefault(event.function, []).append(event.seconds)
        return {
            function: {
                "callsPerJob": round(len(durations) / self.jobs, 3),
                "meanMs": round(1000 * statistics.fmean(durations), 1),
                "memoryMB": self.memory_mb.get(function, 128),
                "gbSecondsPerJob": sum(durations) * self.memory_mb.get(function, 128) / 1024 / self.jobs,
            }
            for function, durations in grouped.items()
            if function != "S3IntakeFunction"  # the bucket's s3:TestEvent at start-up, not a job's
        }


def job_bodies(
    run: str, kind: str, count: int, generation: float, rng: random.Random
) -> list[dict[str, Any]]:
    model, _, extra = WORKLOADS[kind]
    return [
        {
            "jobId": f"{run}-{index:04d}",
            "prompt": PROMPT,
            "model": model,
            **extra,
            "providerInput": {
                "simLatencySeconds": round(rng.uniform(1 - SPREAD, 1 + SPREAD) * generation, 2)
            },
        }
        for index in range(count)
    ]


def run_wave(stack: Any, bodies: list[dict[str, Any]], generation: float) -> list[dict[str, Any]]:
    ids = {body["jobId"] for body in bodies}
    send_jobs(stack, bodies)

    def all_done() -> list[dict[str, Any]] | None:
        records = [r for r in scan_records(stack) if r["jobId"] in ids]
        done = [r for r in records if r.get("status") in {"COMPLETED", "FAILED", "TIMED_OUT"}]
        return records if len(done) == len(ids) else None

    records: list[dict[str, Any]] = wait_until(
        all_done, timeout=300 + generation * 3, what="every job terminal"
    )
    time.sleep(0.5)  # let the last executions reach their final state
    return records


def history(sfn: SFNClient, execution_arn: str) -> list[HistoryEventTypeDef]:
    events: list[HistoryEventTypeDef] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def measure(option: str, kind: str, jobs: int, generation: float, seed: int) -> Measured:
    parameters = polling_option(option)
    rng = random.Random(seed)
    with local_stack(
        poll_interval=POLL_INTERVAL,
        sim_latency=(generation, generation),
        parameters=parameters,
        concurrent_jobs=jobs,
    ) as stack:
        run = f"cost{int(time.time())}"
        if parameters.get("FirstPollAfter") == "auto":
            # The records auto learns from; its cold-start estimate is kept 30 s (first_poll.py).
            run_wave(stack, job_bodies(f"{run}w", kind, AUTO_WARMUP_JOBS, generation, rng), generation)
            time.sleep(31)
        log = InvocationLog()
        instrument_dispatcher(stack, log)
        requests = RequestLog()
        bodies = job_bodies(run, kind, jobs, generation, rng)
        ids = {body["jobId"] for body in bodies}
        with count_aws_requests(stack, requests):
            records = run_wave(stack, bodies, generation)
        receives = sum(poller.stats.batches for poller in stack.pollers)
        sfn = stack.client("stepfunctions")
        histories = [history(sfn, record["executionArn"]) for record in records]
        tasks = {t["taskId"]: t for t in stack.simulator.admin.tasks()}
        events = [e for e in log.events if e.job_id is None or e.job_id in ids]
    first_poll_at: dict[str, float] = {}
    for event in events:
        if event.function == "PollFunction" and event.job_id:
            first_poll_at[event.job_id] = min(first_poll_at.get(event.job_id, math.inf), event.started)
    return Measured(
        option=option,
        kind=kind,
        jobs=jobs,
        generation=generation,
        records=records,
        histories=histories,
        invocations=events,
        memory_mb=dict(log.memory_mb),
        requests=dict(requests.counts),
        receives=receives,
        provider_done={
            r["jobId"]: parse_iso(tasks[r["taskId"]]["completedAt"])
            for r in records
            if r.get("taskId") in tasks and tasks[r["taskId"]].get("completedAt")
        },
        first_poll_at=first_poll_at,
    )


def priced(measured: Measured, log_level: str) -> dict[str, Any]:
    """Per-job quantities and $ per 1,000 jobs (STANDARD, EXPRESS) of one measured run."""
    jobs = measured.jobs
    functions = measured.per_function()
    per_job_transitions = statistics.fmean(transitions(h) for h in measured.histories)
    execution_seconds = statistics.fmean(duration_seconds(h) for h in measured.histories)
    item_bytes = statistics.fmean(len(repr(r).encode()) for r in measured.records)
    wru, rru = dynamodb_units(measured.requests, item_bytes, jobs)
    s3_puts = (
        sum(
            measured.requests.get(f"s3.{op}", 0)
            for op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
        )
        / jobs
    )
    gb_seconds = sum(f["gbSecondsPerJob"] for f in functions.values())
    calls = sum(f["callsPerJob"] for f in functions.values())
    poll = functions.get("PollFunction", {"callsPerJob": 0.0, "meanMs": 0.0})
    costs = model(
        transitions_per_job=per_job_transitions,
        express_seconds=execution_seconds,
        history_events=statistics.fmean(logged_events(h, log_level) for h in measured.histories),
        lambda_gb_seconds=gb_seconds,
        lambda_calls=calls,
        wru=wru,
        rru=rru,
        sqs_requests=ASSUMED["userSendsPerJob"] + 2 * measured.receives / jobs,
        s3_puts=s3_puts,
        secrets_calls=measured.requests.get("secretsmanager.GetSecretValue", 0) / jobs,
    )
    delays, early = [], []
    for record in measured.records:
        done = measured.provider_done.get(record["jobId"])
        if record.get("status") != "COMPLETED" or done is None:
            continue
        delay = parse_iso(record["completedAt"]) - done
        # Finished before its first poll: detected later than at 2-s polling from the start.
        first = measured.first_poll_at.get(record["jobId"], math.inf)
        (early if done < first else delays).append(delay)
    return {
        "polls": statistics.fmean(float(r.get("polls") or 0) for r in measured.records),
        "transitions": per_job_transitions,
        "executionSeconds": execution_seconds,
        "transitionsPerJobSecond": per_job_transitions / execution_seconds if execution_seconds else math.nan,
        # Lambda instances one polling job holds on average (PollFunction busy time / execution time).
        "pollConcurrencyPerJob": poll["callsPerJob"] * poll["meanMs"] / 1000 / execution_seconds
        if execution_seconds
        else math.nan,
        "lambdaGbSeconds": gb_seconds,
        "lambdaCalls": calls,
        "functions": functions,
        "wru": wru,
        "rru": rru,
        "s3Puts": s3_puts,
        "awsRequests": measured.requests,
        "itemBytes": item_bytes,
        "usdPer1000": costs,
        "totalsUsdPer1000": {k: round(sum(v.values()), 4) for k, v in costs.items()},
        "detectionSeconds": summary(delays),
        "finishedBeforeFirstPoll": {"share": len(early) / max(1, len(early) + len(delays)), **summary(early)},
        "completed": sum(1 for r in measured.records if r.get("status") == "COMPLETED"),
    }


def job_poller_sample(default: dict[str, Any], log_level: str) -> dict[str, dict[str, float]]:
    """The Job Poller sample: Submit Job (Lambda) -> [Wait -> Get Job Status (Lambda) -> Job
    Complete?] x polls -> Get Final Job Status (Lambda); no queue, no job record, no output copy.
    Same polls as our default, our measured Lambda durations (submit = intake, status = one poll)."""
    functions = default["functions"]
    poll = functions.get("PollFunction", {"meanMs": 0.0, "memoryMB": 256})
    intake = functions.get("IntakeFunction", {"meanMs": 0.0, "memoryMB": 256, "callsPerJob": 1})
    polls = default["polls"]
    submit_gb_s = intake["meanMs"] / 1000 * intake["callsPerJob"] * intake["memoryMB"] / 1024
    status_gb_s = (polls + 1) * poll["meanMs"] / 1000 * poll["memoryMB"] / 1024
    return model(
        transitions_per_job=1 + 3 * polls + 1,
        express_seconds=default["executionSeconds"],
        history_events=0.0 if log_level != "ALL" else 3 * polls + 4,
        lambda_gb_seconds=submit_gb_s + status_gb_s,
        lambda_calls=1 + polls + 1,
        wru=0.0,
        rru=0.0,
        sqs_requests=0.0,
        s3_puts=0.0,
        secrets_calls=0.0,
    )


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, help="jobs per kind and option (default 40, smoke 3)")
    p.add_argument("--kinds", help="comma list of image,video (default both; smoke image)")
    p.add_argument("--options", help=f"comma list of polling options (default {FULL_OPTIONS})")
    p.add_argument("--generation", type=float, help="override every kind's generation seconds (smoke 8)")
    p.add_argument("--seed", type=int, default=19)
    args = p.parse_args()
    jobs = args.jobs or (3 if args.smoke else 40)
    kinds = (args.kinds or ("image" if args.smoke else "image,video")).split(",")
    options = (args.options or (SMOKE_OPTIONS if args.smoke else FULL_OPTIONS)).split(",")
    if "default" not in options:
        options.insert(0, "default")  # the baseline every ratio is against
    for option in options:
        polling_option(option)  # refuse a bad name before minutes of runs
    log_level = state_machine_log_level()

    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, dict[str, float]]] = {}
    for kind in kinds:
        if kind not in WORKLOADS:
            raise SystemExit(f"unknown kind {kind!r} (image, video)")
        # 8 s: several 2-s polls even when a loaded machine starts the first one 5 s late (polls-3
        # must then poll more than once per call).
        generation = args.generation or (8.0 if args.smoke else WORKLOADS[kind][1])
        results[kind] = {}
        for option in options:
            measured = measure(option, kind, jobs, generation, args.seed)
            results[kind][option] = priced(measured, log_level) | {"generationSeconds": generation}
        samples[kind] = job_poller_sample(results[kind]["default"], log_level)

    rows: list[tuple[str, Any, str]] = []
    for kind, by_option in results.items():
        sample_standard = round(sum(samples[kind]["STANDARD"].values()), 4)
        sample_express = round(sum(samples[kind]["EXPRESS"].values()), 4)
        generation = by_option["default"]["generationSeconds"]
        rows.append(
            (
                f"{kind}: {jobs} jobs of ~{generation:g} s",
                "",
                f"Job Poller sample STANDARD ${sample_standard}, EXPRESS ${sample_express}",
            )
        )
        for option, r in by_option.items():
            std, exp = r["totalsUsdPer1000"]["STANDARD"], r["totalsUsdPer1000"]["EXPRESS"]
            ratio = std / sample_standard if sample_standard else math.nan
            detection = r["detectionSeconds"]
            early = r["finishedBeforeFirstPoll"]
            rows += [
                (
                    f"  {option}: polls / transitions per job",
                    f"{r['polls']:.1f} / {r['transitions']:.1f}",
                    f"{r['lambdaGbSeconds']:.2f} Lambda GB-s",
                ),
                (
                    f"  {option}: STANDARD / EXPRESS $/1,000",
                    f"{std:.3f} / {exp:.3f}",
                    f"{ratio:.2f}x the sample's STANDARD"
                    f" (<= {TARGET_SAMPLE_RATIO}: {'ok' if ratio <= TARGET_SAMPLE_RATIO else 'no'})",
                ),
                (
                    f"  {option}: detection p50 / p95 s",
                    f"{detection.get('p50', math.nan):.2f} / {detection.get('p95', math.nan):.2f}",
                    f"{early['share']:.0%} finished before the first poll"
                    + (
                        f", detected {early['p50']:.1f} / {early['p95']:.1f} s late (p50/p95)"
                        if early.get("n")
                        else ""
                    ),
                ),
                (
                    f"  {option}: transitions/job-s, Lambda/job",
                    f"{r['transitionsPerJobSecond']:.3f} / {r['pollConcurrencyPerJob']:.3f}",
                    "while polling: the quotas' inputs (docs/scaling.md)",
                ),
            ]
    default = results[kinds[0]]["default"]
    emit(
        "cost",
        rows,
        {
            "jobs": jobs,
            "kinds": kinds,
            "options": options,
            "pollIntervalSeconds": POLL_INTERVAL,
            "expressLogLevel": log_level,
            "byKind": results,
            "jobPollerSampleUsdPer1000": samples,
            "prices": PRICES,
            "assumed": ASSUMED,
            "targets": {
                "STANDARD": TARGET_STANDARD,
                "EXPRESS": TARGET_EXPRESS,
                "sampleRatio": TARGET_SAMPLE_RATIO,
            },
            # The first kind's default, as before the options existed.
            "completed": default["completed"],
            "pollsPerJob": round(default["polls"], 3),
            "transitionsPerJob": round(default["transitions"], 3),
            "usdPer1000": {"imagejobs": default["usdPer1000"], "jobPollerSample": samples[kinds[0]]},
            "totalsUsdPer1000": {
                f"{design} {k}": round(sum(costs[k].values()), 4)
                for design, costs in (
                    ("imagejobs", default["usdPer1000"]),
                    ("Job Poller sample", samples[kinds[0]]),
                )
                for k in ("STANDARD", "EXPRESS")
            },
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
