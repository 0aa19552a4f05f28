"""The capacity model (bench/capacity.py, docs/scaling.md) checked against the local stack at small
scale: jobs arrive at a steady rate, and what the model predicts from that rate is measured.

    .venv/bin/python bench/capacity_check.py                       # 1.5 jobs/s for 90 s, 12-s jobs
    .venv/bin/python bench/capacity_check.py --rate 3 --seconds 60
    .venv/bin/python bench/capacity_check.py --smoke               # 1 job/s for 15 s, 3-s jobs

The model is a steady state (Little's law): at an arrival rate of r jobs/s, N = r x T jobs poll at
once, T being the generation time plus the detection delay; the state machine makes N x
(transitions per polling job-second) + r x (fixed transitions per job) state transitions per
second; PollFunction and StoreOutputsFunction hold N x (Lambda instances per polling job) of the
account's concurrency. Each is measured on the local stack over the steady window (after the first
jobs have finished, before the arrivals stop), from the executions' histories and the functions'
invocations, and printed beside the model's value as a ratio. The per-job durations the model takes
as inputs (a poll's and a copy's time, the detection delay) are the ones measured in the same run,
so the ratios test the model's shape, not this machine's speed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from _common import (
    InvocationLog,
    emit,
    instrument_dispatcher,
    local_stack,
    parser,
    scan_records,
    send_jobs,
    wait_until,
)
from capacity import DEFAULT_OPTION, Workload, job_load
from cost import history

POLL_INTERVAL = 2
PROMPT = "a lighthouse at dawn, capacity check"
# The model's shape holds where measured / model is within this band (a small local run is noisy).
AGREEMENT = (0.85, 1.15)


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(end, self.end) - max(start, self.start))


def send_steadily(stack: Any, run: str, rate: float, seconds: float) -> list[str]:
    """One job every 1/rate seconds (open loop: arrivals do not wait for the pipeline)."""
    ids: list[str] = []
    started = time.monotonic()
    while (index := len(ids)) < int(rate * seconds):
        due = started + index / rate
        time.sleep(max(0.0, due - time.monotonic()))
        job_id = f"{run}-{index:04d}"
        send_jobs(stack, [{"jobId": job_id, "prompt": PROMPT}])
        ids.append(job_id)
    return ids


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rate", type=float, help="jobs per second (default 1.5; smoke 1)")
    p.add_argument("--seconds", type=float, help="seconds of arrivals (default 90; smoke 15)")
    p.add_argument("--generation", type=float, help="the provider's seconds per job (default 12; smoke 3)")
    args = p.parse_args()
    rate = args.rate or (1.0 if args.smoke else 1.5)
    seconds = args.seconds or (15.0 if args.smoke else 90.0)
    generation = args.generation or (3.0 if args.smoke else 12.0)
    log = InvocationLog()
    with local_stack(poll_interval=POLL_INTERVAL, sim_latency=(generation, generation)) as stack:
        instrument_dispatcher(stack, log)
        run = f"cap{int(time.time())}"
        arrivals_from = time.time()
        ids = send_steadily(stack, run, rate, seconds)
        arrivals_to = time.time()

        def all_done() -> list[dict[str, Any]] | None:
            records = [r for r in scan_records(stack) if r["jobId"] in set(ids)]
            finished = [r for r in records if r.get("status") in {"COMPLETED", "FAILED", "TIMED_OUT"}]
            return records if len(finished) == len(ids) else None

        records: list[dict[str, Any]] = wait_until(all_done, timeout=300 + 3 * generation, what="all jobs")
        time.sleep(0.5)  # the last executions reach their end
        sfn = stack.client("stepfunctions")
        histories = [history(sfn, r["executionArn"]) for r in records]
    figures = compare(rate, generation, Window(arrivals_from + generation + 5, arrivals_to), histories, log)
    figures.update(rate=rate, arrivalSeconds=seconds, generationSeconds=generation, jobs=len(ids))
    rows: list[tuple[str, Any, str]] = [
        ("jobs (arrivals/s x seconds)", len(ids), f"{rate:g}/s for {seconds:g} s, {generation:g}-s jobs"),
        ("steady window, seconds", figures["windowSeconds"], "first finishes to last arrival"),
    ]
    for name, row in figures["quantities"].items():
        rows.append(
            (name, row["measured"], f"model {row['model']:.3f}, ratio {row['ratio']:.3f}: {row['verdict']}")
        )
    emit("capacity_check", rows, figures, args.smoke)


def compare(
    rate: float,
    generation: float,
    window: Window,
    histories: list[list[dict[str, Any]]],
    log: InvocationLog,
) -> dict[str, Any]:
    """Each quantity of the model, measured over the window, beside the model's value at `rate`."""
    spans = [
        (min(e["timestamp"] for e in h).timestamp(), max(e["timestamp"] for e in h).timestamp())
        for h in histories
    ]
    entered = [e["timestamp"].timestamp() for h in histories for e in h if e["type"].endswith("StateEntered")]
    by_function: dict[str, list[tuple[float, float]]] = {}
    for event in log.events:
        by_function.setdefault(event.function, []).append((event.started, event.started + event.seconds))

    def mean_seconds(function: str) -> float:
        """Of the invocations in the window: the cold starts before it are not the steady state's."""
        inside = [b - a for a, b in by_function.get(function, []) if window.start <= a < window.end]
        return statistics.fmean(inside) if inside else 0.0

    poll_seconds, store_seconds = mean_seconds("PollFunction"), mean_seconds("StoreOutputsFunction")
    # The model's per-job load; a poll's and a copy's durations as this run measured them.
    load = job_load(
        DEFAULT_OPTION,
        Workload(generation, None, poll_seconds=poll_seconds, store_seconds=store_seconds),
    )
    in_flight = rate * load.seconds_in_flight
    model = {
        "jobs polling at once (Little's law)": in_flight,
        "state transitions per second": in_flight * load.transitions_per_second,
        "Lambda invocations per second (Poll + StoreOutputs)": in_flight * load.invocations_per_second,
        "Lambda instances busy (Poll + StoreOutputs)": in_flight * load.lambda_instances,
    }
    measured = {
        "jobs polling at once (Little's law)": sum(window.overlap(a, b) for a, b in spans) / window.seconds,
        "state transitions per second": sum(1 for t in entered if window.start <= t < window.end)
        / window.seconds,
        "Lambda invocations per second (Poll + StoreOutputs)": sum(
            1
            for function in ("PollFunction", "StoreOutputsFunction")
            for a, _ in by_function.get(function, [])
            if window.start <= a < window.end
        )
        / window.seconds,
        "Lambda instances busy (Poll + StoreOutputs)": sum(
            window.overlap(a, b)
            for function in ("PollFunction", "StoreOutputsFunction")
            for a, b in by_function.get(function, [])
        )
        / window.seconds,
    }
    quantities = {}
    for name, value in measured.items():
        ratio = value / model[name] if model[name] else float("nan")
        quantities[name] = {
            "measured": round(value, 3),
            "model": round(model[name], 3),
            "ratio": round(ratio, 3),
            "verdict": "agrees" if AGREEMENT[0] <= ratio <= AGREEMENT[1] else "DISAGREES",
        }
    return {
        "windowSeconds": round(window.seconds, 1),
        "inputs": {
            "pollSeconds": round(poll_seconds, 4),
            "storeSeconds": round(store_seconds, 4),
            "secondsInFlight": round(load.seconds_in_flight, 4),
        },
        "quantities": quantities,
    }


if __name__ == "__main__":
    main()
