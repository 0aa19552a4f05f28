"""Detection delay: from the provider marking a task complete to the job's record being COMPLETED
with its objects in S3, over many concurrent jobs on the local stack (2 s poll interval).

    .venv/bin/python bench/detection_delay.py            # 200 concurrent jobs, default polling
    .venv/bin/python bench/detection_delay.py --options default,polls-5,polls-15,first-poll-auto
    .venv/bin/python bench/detection_delay.py --smoke    # 4 jobs, default and polls-3

Every task is submitted with a pending time of an hour, so nothing finishes on its
own; once every job is SUBMITTED and its loop is polling, the benchmark releases
each task (`sim.admin.release`) at a uniformly random moment over a window. The
delay is the record's `completedAt` minus the simulator's `completedAt` for that
task. The floor is the poll interval itself: uniform on 0-2 s (mean 1 s).

With `--options` (docs/polling.md) each polling option runs on a fresh stack, one after the other
in the same run. Every task is released after its job's first poll, so these are the delays of
jobs that finish after the first poll; bench/cost.py measures those that finish before it.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from typing import Any

from _common import (
    InvocationLog,
    ResourceSampler,
    emit,
    instrument_dispatcher,
    jobs_with,
    local_stack,
    parse_iso,
    parser,
    polling_option,
    scan_records,
    send_jobs,
    summary,
    wait_until,
)

POLL_INTERVAL = 2
# One prompt for every job: the simulator renders (and caches) each prompt's PNG, CPU that a real
# provider's CDN spends elsewhere; job ids keep the jobs apart.
PROMPT = "a lighthouse at dawn, benchmark"
TARGET_P50, TARGET_P95 = 1.5, 2.5


def measure(
    option: str, jobs: int, window: float, seed: int
) -> tuple[list[tuple[str, Any, str]], dict[str, Any]]:
    """One option's run: its table rows and figures."""
    rng = random.Random(seed)
    invocations = InvocationLog()
    parameters = polling_option(option)

    with local_stack(
        poll_interval=POLL_INTERVAL,
        sim_latency=(3600.0, 3600.0),
        parameters=parameters,
        concurrent_jobs=jobs,
    ) as stack:
        instrument_dispatcher(stack, invocations)
        admin = stack.simulator.admin
        run = f"dd{int(time.time())}"
        ids = [f"{run}-{index:04d}" for index in range(jobs)]
        with ResourceSampler() as resources:
            send_jobs(stack, ({"jobId": job_id, "prompt": PROMPT} for job_id in ids))

            # Every job polled once = submitted and looping; then one scan for the task ids.
            wait_until(
                lambda: jobs_with(invocations, "PollFunction", set(ids)) == jobs,
                timeout=120 + jobs,
                what="every job polling",
                interval=0.5,
            )
            task_of = {r["jobId"]: r["taskId"] for r in scan_records(stack) if r["jobId"] in set(ids)}
            # Let every loop reach steady polling before the first release.
            time.sleep(POLL_INTERVAL * 1.5)
            schedule = sorted((rng.uniform(0, window), job_id) for job_id in ids)
            started = time.monotonic()

            def releaser() -> None:
                for offset, job_id in schedule:
                    time.sleep(max(0.0, started + offset - time.monotonic()))
                    admin.release(task_of[job_id])

            thread = threading.Thread(target=releaser, name="bench-releaser")
            thread.start()
            thread.join()

            def all_done() -> list[dict[str, Any]] | None:
                # Cheap check first (no AWS calls), then one scan to confirm.
                if jobs_with(invocations, "StoreOutputsFunction", set(ids), ok_only=False) < jobs:
                    return None
                records = [r for r in scan_records(stack) if r["jobId"] in task_of]
                done = [r for r in records if r.get("status") in {"COMPLETED", "FAILED", "TIMED_OUT"}]
                return records if len(done) == jobs else None

            records = wait_until(all_done, timeout=120 + jobs, what="every job terminal", interval=0.25)
        tasks = {t["taskId"]: t for t in admin.tasks()}
        store_starts = {
            job: min(e.started for e in events)
            for job, events in invocations.by_job("StoreOutputsFunction").items()
        }
        poll_gaps: list[float] = []
        for events in invocations.by_job("PollFunction").values():
            starts = sorted(e.started for e in events)
            poll_gaps.extend(b - a for a, b in itertools.pairwise(starts))

    delays, detect, store = [], [], []
    completed = 0
    for record in records:
        if record.get("status") != "COMPLETED":
            continue
        completed += 1
        provider_done = parse_iso(tasks[record["taskId"]]["completedAt"])
        record_done = parse_iso(record["completedAt"])
        delays.append(record_done - provider_done)
        if record["jobId"] in store_starts:
            detect.append(store_starts[record["jobId"]] - provider_done)
            store.append(record_done - store_starts[record["jobId"]])
    stats = summary(delays)
    p50, p95 = stats.get("p50", float("nan")), stats.get("p95", float("nan"))
    poll_durations = invocations.durations.get("PollFunction", [])
    store_durations = invocations.durations.get("StoreOutputsFunction", [])
    rows = [
        (f"{option}: concurrent jobs", jobs, f"{completed} COMPLETED; released over {window:.0f} s"),
        ("detection delay p50 s", p50, f"<= {TARGET_P50}: {'ok' if p50 <= TARGET_P50 else 'MISSED'}"),
        ("detection delay p95 s", p95, f"<= {TARGET_P95}: {'ok' if p95 <= TARGET_P95 else 'MISSED'}"),
        ("detection delay max s", stats.get("max", float("nan")), "floor: uniform 0-2 s"),
        ("  release -> StoreOutputs start p50 s", summary(detect).get("p50", float("nan")), "poll phase"),
        ("  StoreOutputs start -> COMPLETED p50 s", summary(store).get("p50", float("nan")), "copy + record"),
        (
            "poll cycle (start to start) p50 s",
            summary(poll_gaps).get("p50", float("nan")),
            "ideal 2 s + poll",
        ),
        ("poll cycle p95 s", summary(poll_gaps).get("p95", float("nan")), ""),
        ("PollFunction duration p50 ms", 1000 * summary(poll_durations).get("p50", float("nan")), ""),
        (
            "StoreOutputsFunction duration p50 ms",
            1000 * summary(store_durations).get("p50", float("nan")),
            "",
        ),
        (
            "peak RSS MB (every stack process)",
            round(resources.peak_rss_mb, 1),
            f"{resources.peak_processes} processes",
        ),
        (
            "CPU seconds / wall seconds",
            f"{resources.cpu_seconds:.0f} / {resources.wall_seconds:.0f}",
            "2 cores",
        ),
    ]
    return rows, {
        "option": option,
        "jobs": jobs,
        "completed": completed,
        "statuses": dict(
            collections.Counter(
                f"{r.get('status')} {(r.get('error') or {}).get('code', '')}".strip() for r in records
            )
        ),
        "pollIntervalSeconds": POLL_INTERVAL,
        "releaseWindowSeconds": window,
        "delaySeconds": stats,
        "pollPhaseSeconds": summary(detect),
        "storePhaseSeconds": summary(store),
        "pollCycleSeconds": summary(poll_gaps),
        "pollFunctionSeconds": summary(poll_durations),
        "storeOutputsFunctionSeconds": summary(store_durations),
        "peakRssMB": round(resources.peak_rss_mb, 1),
        "peakThreads": resources.peak_threads,
        "cpuSeconds": round(resources.cpu_seconds, 1),
        "wallSeconds": round(resources.wall_seconds, 1),
        "targets": {"p50": TARGET_P50, "p95": TARGET_P95},
        "pollFunctionCallsPerJob": round(len(poll_durations) / max(1, jobs), 3),
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, help="concurrent jobs (default 200, smoke 4)")
    p.add_argument("--window", type=float, help="seconds over which tasks are released (default 20)")
    p.add_argument(
        "--options", help="comma list of polling options (default: default; smoke default,polls-3)"
    )
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    jobs = args.jobs or (4 if args.smoke else 200)
    window = args.window if args.window is not None else (2.0 if args.smoke else 20.0)
    options = (args.options or ("default,polls-3" if args.smoke else "default")).split(",")
    for option in options:
        polling_option(option)  # refuse a bad name before minutes of runs
    rows: list[tuple[str, Any, str]] = []
    by_option: dict[str, dict[str, Any]] = {}
    for option in options:
        option_rows, by_option[option] = measure(option, jobs, window, args.seed)
        rows += option_rows
    # The first option's figures at the top level, as before the options existed.
    emit(
        "detection_delay",
        rows,
        {**by_option[options[0]], "options": options, "byOption": by_option},
        args.smoke,
    )


if __name__ == "__main__":
    main()
