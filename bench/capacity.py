"""Capacity: how many jobs can poll at once, and how many jobs per second the pipeline sustains,
against the account's published quotas, for STANDARD and EXPRESS in the large regions and the
others; which quota binds first (docs/scaling.md).

    .venv/bin/python bench/capacity.py            # the tables of docs/scaling.md
    .venv/bin/python bench/capacity.py --smoke    # the same (pure arithmetic, no stack)

A steady-state model (Little's law): a job polls for T = generation time + half a poll interval
(the mean detection delay), so N jobs polling at once means N / T jobs per second going in and
out. Each quota bounds N or the rate; the smallest bound is the capacity and names the quota that
binds. Polling options are inputs (`PollingOption`): state transitions per job-second while a job
polls, Lambda invocations per polling job-second, and the fixed transitions of a job's start and
end; the default is 2-s polling (Wait -> Poll -> Choice: 3 transitions and 1 invocation per 2 s),
and issue 19's FirstPollAfter and PollsPerInvocation change when and how often it pays them
(`POLLING_OPTIONS`, docs/polling.md). The per-job figures are those bench/cost.py measured on the
local stack (docs/performance.md section 5): 47 transitions for a 30-s job = 15 polls x 3 +
StoreOutputs + JobCompleted; 1 PutItem + 3 UpdateItem at 22 write units (GSI ByStatus projects
ALL) and 1 read unit per job.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from _common import emit, parser


@dataclass(frozen=True)
class PollingOption:
    """How a job's wait-loop polls: what one second of a polling job costs, and what a job costs
    once at its start and end. Other options (first poll later, several polls per invocation)
    add rows with their own figures."""

    name: str
    poll_interval_seconds: float
    transitions_per_job_second: float  # state transitions while the job polls
    invocations_per_job_second: float  # Lambda invocations while the job polls
    fixed_transitions: float = 2.0  # StoreOutputs + JobCompleted (Wait/Poll/Choice counted above)
    # PollsPerInvocation (docs/polling.md): one call polls N times, an interval apart, so a cycle
    # of 3 transitions and 1 invocation lasts N intervals and the call runs for N-1 of them.
    polls_per_invocation: int = 1
    # FirstPollAfter: the share of a job's generation time before its first poll (auto: the 10th
    # percentile of the model's times, ~0.9 of a job whose time varies by +-10 %).
    first_poll_share: float = 0.0


DEFAULT_OPTION = PollingOption("2-s polling (Wait -> Poll -> Choice)", 2.0, 3 / 2.0, 1 / 2.0)
# Issue 19's options (docs/polling.md), on top of 2-s polling.
POLLING_OPTIONS = (
    DEFAULT_OPTION,
    PollingOption("FirstPollAfter=auto", 2.0, 3 / 2.0, 1 / 2.0, first_poll_share=0.9),
    PollingOption("PollsPerInvocation=5", 2.0, 3 / 2.0, 1 / 2.0, polls_per_invocation=5),
    PollingOption("PollsPerInvocation=15", 2.0, 3 / 2.0, 1 / 2.0, polls_per_invocation=15),
    PollingOption(
        "FirstPollAfter=auto + PollsPerInvocation=15", 2.0, 3 / 2.0, 1 / 2.0, 2.0, 15, first_poll_share=0.9
    ),
)


@dataclass(frozen=True)
class Quotas:
    """Published quotas of one workflow type in one kind of region (AWS Step Functions, Lambda,
    DynamoDB quota pages, December 2026; all default values, most can be raised)."""

    label: str
    transitions_per_second: float | None  # None: not limited (EXPRESS)
    start_execution_per_second: float  # refill rate (the bucket's burst is larger)
    start_execution_burst: int
    lambda_concurrency: int = 1000  # per account and region, shared by every function
    # DynamoDB on-demand: a new table serves up to 4,000 writes/s at once (it grows after that up to
    # the table maximum of 40,000 write units/s): the figure that holds on the first busy day.
    dynamodb_write_units_per_second: float = 4000.0
    history_events: int | None = 25_000  # per execution (STANDARD); EXPRESS keeps no history


QUOTAS = (
    Quotas("STANDARD, us-east-1 / us-west-2 / eu-west-1", 5000.0, 300.0, 1300),
    Quotas("STANDARD, other regions", 800.0, 150.0, 800),
    Quotas("EXPRESS, any region", None, 6000.0, 6000, history_events=None),
)


@dataclass(frozen=True)
class Workload:
    generation_seconds: float  # the provider's time to finish a task
    provider_concurrency: int | None  # tasks the provider runs at once for us (None: unbounded)
    intake_concurrency: int = 5  # template MaxProviderConcurrency (the SQS ScalingConfig)
    intake_seconds_per_job: float = 0.5  # one submission (POST) and its record writes, on AWS
    poll_seconds: float = 0.2  # one PollFunction invocation (a GET to the provider), on AWS
    store_seconds: float = 1.0  # one StoreOutputs invocation (copy one image to S3)
    write_units_per_job: float = 22.0  # measured by bench/cost.py
    handover_after_seconds: float = 0.0  # EXPRESS: a fresh execution every this many seconds


# Each history event of a poll round: Wait entered/exited, Poll entered/scheduled/started/
# succeeded/exited, Choice entered/exited.
HISTORY_EVENTS_PER_POLL = 9


@dataclass(frozen=True)
class Capacity:
    max_polling: float
    polling_bound_by: str
    max_jobs_per_second: float
    rate_bound_by: str
    longest_job_seconds: float | None  # the history-event limit, for STANDARD


@dataclass(frozen=True)
class JobLoad:
    """What one job in flight asks of the account, per second, on average over its life."""

    seconds_in_flight: float  # T: generation time + the mean detection delay (half an interval)
    transitions_per_second: float  # polling, plus its share of the start's and end's transitions
    lambda_instances: float  # PollFunction and StoreOutputsFunction concurrency it holds
    invocations_per_second: float  # of PollFunction and StoreOutputsFunction
    starts: float  # executions per job (1, plus EXPRESS hand-overs)


def job_load(option: PollingOption, workload: Workload) -> JobLoad:
    seconds_polling = workload.generation_seconds + option.poll_interval_seconds / 2
    handovers = (
        workload.generation_seconds / workload.handover_after_seconds
        if workload.handover_after_seconds
        else 0.0
    )
    # The part of a job's time it actually polls, and each cycle's share of it (several polls per call).
    polling_share = 1.0 - option.first_poll_share * workload.generation_seconds / seconds_polling
    cycles = polling_share / option.polls_per_invocation
    call_seconds = (option.polls_per_invocation - 1) * option.poll_interval_seconds + workload.poll_seconds
    return JobLoad(
        seconds_in_flight=seconds_polling,
        transitions_per_second=option.transitions_per_job_second * cycles
        + (option.fixed_transitions + 3 * handovers) / seconds_polling,
        lambda_instances=option.invocations_per_job_second * cycles * call_seconds
        + workload.store_seconds / seconds_polling,
        invocations_per_second=option.invocations_per_job_second * cycles + 1.0 / seconds_polling,
        starts=1.0 + handovers,
    )


def capacity(option: PollingOption, quotas: Quotas, workload: Workload) -> Capacity:
    """The largest N (jobs polling at once) and rate (jobs/s) every quota allows."""
    load = job_load(option, workload)
    seconds_polling = load.seconds_in_flight
    bounds_n: list[tuple[float, str]] = []
    if quotas.transitions_per_second is not None:
        bounds_n.append((quotas.transitions_per_second / load.transitions_per_second, "state transitions"))
    lambda_left = quotas.lambda_concurrency - workload.intake_concurrency
    bounds_n.append((lambda_left / load.lambda_instances, "Lambda concurrency"))
    if workload.provider_concurrency is not None:
        bounds_n.append((float(workload.provider_concurrency), "provider concurrency"))
    bounds_n.append(
        (quotas.start_execution_per_second * seconds_polling / load.starts, "StartExecution rate")
    )
    bounds_n.append(
        (
            workload.intake_concurrency / workload.intake_seconds_per_job * seconds_polling,
            "intake (SQS MaximumConcurrency)",
        )
    )
    bounds_n.append(
        (
            quotas.dynamodb_write_units_per_second / workload.write_units_per_job * seconds_polling,
            "DynamoDB on-demand writes",
        )
    )
    max_polling, polling_bound = min(bounds_n)
    longest = None
    if quotas.history_events is not None:
        polls = (quotas.history_events - 20) / HISTORY_EVENTS_PER_POLL  # ~20 events at start and end
        longest = polls * option.poll_interval_seconds
    return Capacity(max_polling, polling_bound, max_polling / seconds_polling, polling_bound, longest)


class TransitionBucket:
    """Step Functions' transition quota as a token bucket (burst = one second's refill), granting
    transitions in the order they are asked for: a throttled transition is delayed, never dropped."""

    def __init__(self, per_second: float) -> None:
        self.rate = per_second
        self.tokens = per_second
        self.at = 0.0

    def grant(self, asked: float) -> float:
        """When a transition asked for at `asked` (non-decreasing) happens."""
        moment = max(asked, self.at)
        self.tokens = min(self.rate, self.tokens + (moment - self.at) * self.rate)
        self.at = moment
        if self.tokens < 1.0:
            moment += (1.0 - self.tokens) / self.rate
            self.tokens, self.at = 1.0, moment
        self.tokens -= 1.0
        return moment


def simulate_throttled_polling(
    transitions_per_second: float,
    jobs: int,
    option: PollingOption = DEFAULT_OPTION,
    poll_seconds: float = 0.2,
    duration: float = 120.0,
    seed: int = 17,
) -> float:
    """Discrete-event run of `jobs` loops polling for `duration` seconds against the transition
    bucket (each round: Wait entered, Poll after the interval, Choice after the poll); returns the
    mean time between a job's polls. Past the quota the rounds stretch: the answer to "does
    throttling lose anything?" is no, it slows every job's polls alike."""
    bucket = TransitionBucket(transitions_per_second)
    rng = random.Random(seed)
    # (time asked, job, step): step 0 = Wait entered, 1 = Poll entered, 2 = Choice entered.
    events = [(rng.uniform(0, option.poll_interval_seconds), job, 0) for job in range(jobs)]
    heapq.heapify(events)
    polls: dict[int, list[float]] = {job: [] for job in range(jobs)}
    while events:
        asked, job, step = heapq.heappop(events)
        moment = bucket.grant(asked)
        if moment > duration:
            continue
        if step == 0:
            heapq.heappush(events, (moment + option.poll_interval_seconds, job, 1))
        elif step == 1:
            polls[job].append(moment)
            heapq.heappush(events, (moment + poll_seconds, job, 2))
        else:
            heapq.heappush(events, (moment, job, 0))
    gaps = [b - a for times in polls.values() for a, b in itertools.pairwise(times)]
    return sum(gaps) / len(gaps)


def table(option: PollingOption, workloads: Iterable[Workload]) -> list[str]:
    lines = [
        f"{option.name}: {option.transitions_per_job_second:g} transitions and "
        f"{option.invocations_per_job_second:g} Lambda invocations per polling job-second",
        "| quotas | generation | provider concurrency | intake concurrency | max jobs polling at once "
        "| max jobs/s | binds first | longest job (history limit) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload in workloads:
        for quotas in QUOTAS:
            express = quotas.history_events is None
            shaped = Workload(**{**workload.__dict__, "handover_after_seconds": 120.0 if express else 0.0})
            result = capacity(option, quotas, shaped)
            longest = (
                "-" if result.longest_job_seconds is None else f"{result.longest_job_seconds / 60:,.0f} min"
            )
            provider = (
                "unbounded" if workload.provider_concurrency is None else f"{workload.provider_concurrency:,}"
            )
            lines.append(
                f"| {quotas.label} | {workload.generation_seconds:g} s | {provider} | "
                f"{workload.intake_concurrency} | "
                f"{math.floor(result.max_polling):,} | {result.max_jobs_per_second:,.1f} | "
                f"{result.polling_bound_by} | {longest} |"
            )
    return lines


THROTTLED_JOBS = (400, 500, 600, 800, 1000, 2000)
SMOKE_JOBS = (100, 1000)
WORKLOADS = (
    Workload(30.0, None),
    Workload(30.0, None, intake_concurrency=100),
    Workload(120.0, None, intake_concurrency=100),
    Workload(30.0, 500, intake_concurrency=100),
)


def options_table(workload: Workload) -> list[str]:
    """Every polling option on one workload, each kind of region: the rows of docs/polling.md."""
    lines = [
        f"{workload.generation_seconds:g}-s jobs, intake concurrency {workload.intake_concurrency}:",
        "| option | " + " | ".join(q.label for q in QUOTAS) + " |",
        "|---|" + "---|" * len(QUOTAS),
    ]
    for option in POLLING_OPTIONS:
        cells = []
        for quotas in QUOTAS:
            express = quotas.history_events is None
            shaped = Workload(**{**workload.__dict__, "handover_after_seconds": 120.0 if express else 0.0})
            result = capacity(option, quotas, shaped)
            cells.append(f"{math.floor(result.max_polling):,} ({result.polling_bound_by})")
        lines.append(f"| {option.name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    lines = table(DEFAULT_OPTION, WORKLOADS)
    print("\n".join(lines))
    print("\nPolling options (docs/polling.md): max jobs polling at once (what binds first)")
    option_figures: dict[str, dict[str, float]] = {}
    for workload in (
        Workload(30.0, None, intake_concurrency=100),
        Workload(90.0, None, intake_concurrency=100),
    ):
        print("\n".join(options_table(workload)))
        for option in POLLING_OPTIONS:
            for quotas in QUOTAS:
                express = quotas.history_events is None
                shaped = Workload(
                    **{**workload.__dict__, "handover_after_seconds": 120.0 if express else 0.0}
                )
                key = f"{option.name} | {quotas.label} | {workload.generation_seconds:g} s"
                option_figures[key] = {"maxPolling": round(capacity(option, quotas, shaped).max_polling, 1)}
    print("\nPast the quota (discrete-event run, 800 transitions/s, 2-s polling, 120 s):")
    print("| jobs polling | mean time between a job's polls |\n|---|---|")
    throttled = {}
    for jobs in SMOKE_JOBS if args.smoke else THROTTLED_JOBS:
        period = simulate_throttled_polling(800.0, jobs, duration=30.0 if args.smoke else 120.0)
        throttled[str(jobs)] = round(period, 2)
        print(f"| {jobs:,} | {period:.2f} s |")
    rows = []
    figures: dict[str, object] = {}
    for quotas in QUOTAS:
        express = quotas.history_events is None
        result = capacity(
            DEFAULT_OPTION,
            quotas,
            Workload(30.0, None, intake_concurrency=100, handover_after_seconds=120.0 if express else 0.0),
        )
        key = quotas.label.split(",")[0].lower() + ("" if "other" not in quotas.label else "-other")
        figures[key] = {
            "maxPolling": round(result.max_polling, 1),
            "maxJobsPerSecond": round(result.max_jobs_per_second, 2),
            "bindsFirst": result.polling_bound_by,
        }
        rows.append((f"{quotas.label}: jobs polling", round(result.max_polling, 1), result.polling_bound_by))
    figures["pollPeriodAt800PerSecond"] = throttled
    figures["pollingOptions"] = option_figures
    emit("capacity", rows, figures, args.smoke)


if __name__ == "__main__":
    main()
