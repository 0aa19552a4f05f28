"""Cost: AWS cost per 1,000 image jobs (30 s generation, 2 s polling), computed from a local run's
real execution histories, Lambda invocations x measured duration x memory, DynamoDB writes and
reads, SQS requests and S3 PUTs, at us-east-1 list prices; STANDARD and EXPRESS side by side with
the AWS "Job Poller" sample's design (Wait -> Task -> Choice, Retry on every task).

    .venv/bin/python bench/cost.py            # 50 concurrent jobs, 30 s generation, 2 s polling
    .venv/bin/python bench/cost.py --smoke    # 3 jobs, 1 s generation

Everything countable is counted in the run (state transitions from each execution's history,
every AWS API call made in the process, every Lambda invocation and its duration); only what a
local run cannot show is assumed, and each assumption is listed with the figures.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    InvocationLog,
    RequestLog,
    count_aws_requests,
    emit,
    instrument_dispatcher,
    local_stack,
    parse_iso,
    parser,
    scan_records,
    send_jobs,
    wait_until,
)

POLL_INTERVAL = 2
# One prompt for every job: the simulator renders (and caches) each prompt's PNG, CPU that a real
# provider's CDN spends elsewhere; job ids keep the jobs apart.
PROMPT = "a lighthouse at dawn, benchmark"
TARGET_STANDARD, TARGET_EXPRESS = 1.30, 0.10

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


def transitions(history: list[dict[str, Any]]) -> int:
    """Billed state transitions: every state entered, plus every retry of a Task."""
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    task_entered = sum(1 for e in history if e["type"] == "TaskStateEntered")
    scheduled = sum(1 for e in history if e["type"] in {"TaskScheduled", "LambdaFunctionScheduled"})
    return entered + max(0, scheduled - task_entered)


def duration_seconds(history: list[dict[str, Any]]) -> float:
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


def logged_events(history: list[dict[str, Any]], level: str) -> int:
    if level == "ALL":
        return len(history)
    if level == "ERROR":
        return sum(e["type"].endswith(("Failed", "TimedOut", "Aborted")) for e in history)
    if level == "FATAL":
        return sum(e["type"] in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted") for e in history)
    return 0


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, help="jobs (default 50, smoke 3)")
    p.add_argument("--generation", type=float, help="simulated generation seconds (default 30, smoke 1)")
    args = p.parse_args()
    jobs = args.jobs or (3 if args.smoke else 50)
    generation = args.generation or (1.0 if args.smoke else 30.0)
    invocations = InvocationLog()
    requests = RequestLog()

    with local_stack(poll_interval=POLL_INTERVAL, sim_latency=(generation, generation)) as stack:
        instrument_dispatcher(stack, invocations)
        sfn = stack.client("stepfunctions")
        run = f"cost{int(time.time())}"
        ids = {f"{run}-{index:04d}" for index in range(jobs)}
        with count_aws_requests(stack, requests):
            send_jobs(stack, ({"jobId": j, "prompt": PROMPT} for j in sorted(ids)))

            def all_done() -> list[dict[str, Any]] | None:
                records = [r for r in scan_records(stack) if r["jobId"] in ids]
                done = [r for r in records if r.get("status") in {"COMPLETED", "FAILED", "TIMED_OUT"}]
                return records if len(done) == jobs else None

            records = wait_until(all_done, timeout=300 + generation * 3, what="every job terminal")
            time.sleep(0.5)  # let the last executions reach their final state
        receives = sum(poller.stats.batches for poller in stack.pollers)
        histories = []
        for record in records:
            events: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"executionArn": record["executionArn"], "maxResults": 1000}
            while True:
                page = sfn.get_execution_history(**kwargs)
                events.extend(page["events"])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
            histories.append(events)
        memory = dict(invocations.memory_mb)

    counted = dict(requests.counts)
    per_job_transitions = statistics.fmean(transitions(h) for h in histories)
    log_level = state_machine_log_level()
    # EXPRESS bills CloudWatch Logs for the events its logging level lets through (ALL: every
    # history event; ERROR: failures only; FATAL: execution-level failures only).
    per_job_events = statistics.fmean(logged_events(h, log_level) for h in histories)
    per_job_seconds = statistics.fmean(duration_seconds(h) for h in histories)
    polls = statistics.fmean(float(r.get("polls") or 0) for r in records)
    item_bytes = statistics.fmean(len(repr(r).encode()) for r in records)
    gb_seconds = 0.0
    calls = 0
    per_function: dict[str, dict[str, float]] = {}
    for function, durations in invocations.durations.items():
        if function == "S3IntakeFunction":
            continue  # the bucket's s3:TestEvent at start-up, not a job's
        seconds = sum(durations)
        gb_seconds += seconds * memory.get(function, 128) / 1024
        calls += len(durations)
        per_function[function] = {
            "callsPerJob": round(len(durations) / jobs, 3),
            "meanMs": round(1000 * seconds / len(durations), 1),
            "memoryMB": memory.get(function, 128),
        }
    wru, rru = dynamodb_units(counted, item_bytes, jobs)
    sqs = ASSUMED["userSendsPerJob"] + 2 * receives / jobs  # ReceiveMessage + DeleteMessageBatch per batch
    s3_puts = (
        sum(
            counted.get(f"s3.{op}", 0)
            for op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
        )
        / jobs
    )
    secrets = counted.get("secretsmanager.GetSecretValue", 0) / jobs
    ours = model(
        transitions_per_job=per_job_transitions,
        express_seconds=per_job_seconds,
        history_events=per_job_events,
        lambda_gb_seconds=gb_seconds / jobs,
        lambda_calls=calls / jobs,
        wru=wru,
        rru=rru,
        sqs_requests=sqs,
        s3_puts=s3_puts,
        secrets_calls=secrets,
    )
    # The Job Poller sample: Submit Job (Lambda) -> [Wait -> Get Job Status (Lambda) -> Job Complete?]
    # x polls -> Get Final Job Status (Lambda); no queue, no job record, no output copy. Same polls,
    # our measured Lambda durations (submit = intake per job, status = poll).
    poll_stats = per_function.get("PollFunction", {"meanMs": 0.0, "memoryMB": 256})
    intake_stats = per_function.get("IntakeFunction", {"meanMs": 0.0, "memoryMB": 256, "callsPerJob": 1})
    submit_gb_s = (
        intake_stats["meanMs"] / 1000 * intake_stats["callsPerJob"] * intake_stats["memoryMB"] / 1024
    )
    status_gb_s = (polls + 1) * poll_stats["meanMs"] / 1000 * poll_stats["memoryMB"] / 1024
    sample_transitions = 1 + 3 * polls + 1
    sample = model(
        transitions_per_job=sample_transitions,
        express_seconds=per_job_seconds,
        history_events=per_job_events + (2 if log_level == "ALL" else 0),
        lambda_gb_seconds=submit_gb_s + status_gb_s,
        lambda_calls=1 + polls + 1,
        wru=0.0,
        rru=0.0,
        sqs_requests=0.0,
        s3_puts=0.0,
        secrets_calls=secrets,
    )
    totals = {
        f"{design} {kind}": round(sum(costs[kind].values()), 4)
        for design, costs in (("imagejobs", ours), ("Job Poller sample", sample))
        for kind in ("STANDARD", "EXPRESS")
    }
    std, exp = totals["imagejobs STANDARD"], totals["imagejobs EXPRESS"]
    rows: list[tuple[str, Any, str]] = [
        ("jobs measured", jobs, f"generation {generation:g} s, poll every {POLL_INTERVAL} s"),
        ("polls per job", round(polls, 2), ""),
        ("state transitions per job", round(per_job_transitions, 2), "from execution histories"),
        ("execution seconds per job", round(per_job_seconds, 2), "Express duration"),
        (
            "Lambda calls per job",
            round(calls / jobs, 2),
            ", ".join(f"{k} {v['callsPerJob']}x{v['meanMs']}ms" for k, v in per_function.items()),
        ),
        ("DynamoDB WRU / RRU per job", f"{wru:.1f} / {rru:.1f}", f"item ~{item_bytes:.0f} B, GSI ALL"),
        ("SQS requests per job", round(sqs, 2), "send + receive/delete per batch"),
        ("S3 PUT-class requests per job", round(s3_puts, 2), ""),
        (
            "imagejobs STANDARD $/1,000 jobs",
            std,
            f"<= {TARGET_STANDARD}: {'ok' if std <= TARGET_STANDARD else 'MISSED'}",
        ),
        (
            "imagejobs EXPRESS $/1,000 jobs",
            exp,
            f"<= {TARGET_EXPRESS}: {'ok' if exp <= TARGET_EXPRESS else 'MISSED'}",
        ),
        ("Job Poller sample STANDARD $/1,000", totals["Job Poller sample STANDARD"], "no queue/record/copy"),
        ("Job Poller sample EXPRESS $/1,000", totals["Job Poller sample EXPRESS"], ""),
    ]
    rows += [(f"  STANDARD {k}", v, "") for k, v in ours["STANDARD"].items()]
    rows += [(f"  EXPRESS {k}", v, "") for k, v in ours["EXPRESS"].items()]
    emit(
        "cost",
        rows,
        {
            "jobs": jobs,
            "generationSeconds": generation,
            "pollIntervalSeconds": POLL_INTERVAL,
            "pollsPerJob": round(polls, 3),
            "transitionsPerJob": round(per_job_transitions, 3),
            "expressLogLevel": log_level,
            "loggedHistoryEventsPerJob": round(per_job_events, 2),
            "executionSecondsPerJob": round(per_job_seconds, 3),
            "lambda": per_function,
            "awsRequests": counted,
            "dynamodb": {
                "wruPerJob": round(wru, 2),
                "rruPerJob": round(rru, 2),
                "itemBytes": round(item_bytes),
            },
            "sqsRequestsPerJob": round(sqs, 3),
            "s3PutsPerJob": round(s3_puts, 3),
            "usdPer1000": {"imagejobs": ours, "jobPollerSample": sample},
            "totalsUsdPer1000": totals,
            "prices": PRICES,
            "assumed": ASSUMED,
            "targets": {"STANDARD": TARGET_STANDARD, "EXPRESS": TARGET_EXPRESS},
            "completed": sum(1 for r in records if r.get("status") == "COMPLETED"),
            "firstCompletedAt": min(
                (parse_iso(r["completedAt"]) for r in records if r.get("completedAt")), default=None
            ),
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
