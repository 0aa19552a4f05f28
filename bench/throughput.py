"""Throughput: N jobs (simulated generation 5-15 s) from SQS to COMPLETED on the local stack, with the
stack's peak RSS and where the CPU goes (py-spy --gil over the stack's processes).

    .venv/bin/python bench/throughput.py            # 1,000 jobs, 2 s polling
    .venv/bin/python bench/throughput.py --smoke    # 10 jobs, generation 0.2-0.5 s

The stack runs in this process (moto server, Step Functions interpreter, every
handler, the simulator), so the peak RSS is the process's VmHWM. The jobs are
sent with SendMessageBatch as fast as the queue takes them.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from _common import (
    GilProfiler,
    InvocationLog,
    ResourceSampler,
    emit,
    instrument_dispatcher,
    jobs_with,
    local_stack,
    parse_iso,
    parser,
    scan_records,
    send_jobs,
    summary,
    wait_until,
)
from imagejobs.store import TERMINAL  # importable once _common has set sys.path

POLL_INTERVAL = 2
# One prompt for every job: the simulator renders (and caches) each prompt's PNG, CPU that a real
# provider's CDN spends elsewhere; job ids keep the jobs apart.
PROMPT = "a lighthouse at dawn, benchmark"
TARGET_SECONDS = 120.0
TARGET_RSS_MB = 600.0


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, help="jobs (default 1000, smoke 10)")
    p.add_argument(
        "--concurrency", type=int, help="MaxProviderConcurrency (intake pollers); template default 5"
    )
    args = p.parse_args()
    jobs = args.jobs or (10 if args.smoke else 1000)
    latency = (0.2, 0.5) if args.smoke else (5.0, 15.0)
    parameters = {"MaxProviderConcurrency": str(args.concurrency)} if args.concurrency else {}
    invocations = InvocationLog()

    with local_stack(poll_interval=POLL_INTERVAL, sim_latency=latency, parameters=parameters) as stack:
        instrument_dispatcher(stack, invocations)
        run = f"tp{int(time.time())}"
        ids = {f"{run}-{index:05d}" for index in range(jobs)}
        submitted_all_at: list[float] = []
        with ResourceSampler() as resources, GilProfiler() as profiler:
            first_send = send_jobs(stack, ({"jobId": job_id, "prompt": PROMPT} for job_id in sorted(ids)))
            sent_at = time.time()

            def all_terminal() -> list[dict[str, Any]] | None:
                # Scan (which loads moto) only once the cheap in-process count says it is worth it.
                polled = jobs_with(invocations, "PollFunction", ids)
                if not submitted_all_at and polled == jobs:
                    submitted_all_at.append(time.time())
                if jobs_with(invocations, "StoreOutputsFunction", ids, ok_only=False) < jobs:
                    return None
                records = [r for r in scan_records(stack) if r["jobId"] in ids]
                statuses = collections.Counter(r.get("status") for r in records)
                done = sum(statuses[s] for s in TERMINAL)
                return records if done == jobs else None

            records = wait_until(all_terminal, timeout=600 + jobs, what="every job terminal", interval=0.5)
    statuses = collections.Counter(r.get("status") for r in records)
    completed_at = [parse_iso(r["completedAt"]) for r in records if r.get("status") == "COMPLETED"]
    last = max(completed_at) if completed_at else float("nan")
    elapsed = last - first_send
    totals = [
        float(r["latency"]["totalSeconds"]) for r in records if (r.get("latency") or {}).get("totalSeconds")
    ]
    generation = [
        float(r["latency"]["generationSeconds"])
        for r in records
        if (r.get("latency") or {}).get("generationSeconds")
    ]

    # Where each job's time went, on the clock of the first send: picked up by intake (record
    # created), submitted to the provider, then generation, then stored (COMPLETED).
    def since_first_send(field: str) -> list[float]:
        return [parse_iso(r[field]) - first_send for r in records if r.get(field)]

    stages = {
        "recordCreated": summary(since_first_send("createdAt")),
        "submitted": summary(since_first_send("submittedAt")),
        "completed": summary(since_first_send("completedAt")),
    }
    stage_rows = [
        (
            f"{label} after first send p50 / p95 / max s",
            " / ".join(f"{stages[key].get(p, 0):.1f}" for p in ("p50", "p95", "max")),
            note,
        )
        for key, label, note in (
            ("recordCreated", "picked up by intake", "queue wait"),
            ("submitted", "submitted to the provider", "intake"),
            ("completed", "COMPLETED", "+ generation, polling, store"),
        )
    ]
    calls = {name: len(values) for name, values in invocations.durations.items()}
    mean_ms = {
        name: round(1000 * summary(values)["mean"], 1) for name, values in invocations.durations.items()
    }
    shares = profiler.shares()
    verdict_time = "ok" if elapsed <= TARGET_SECONDS else f"MISSED by {elapsed - TARGET_SECONDS:.0f} s"
    verdict_rss = (
        "ok"
        if resources.peak_rss_mb <= TARGET_RSS_MB
        else f"MISSED by {resources.peak_rss_mb - TARGET_RSS_MB:.0f} MB"
    )
    rows: list[tuple[str, Any, str]] = [
        ("jobs", jobs, ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))),
        ("first send -> last COMPLETED s", round(elapsed, 1), f"<= {TARGET_SECONDS:.0f}: {verdict_time}"),
        ("jobs/s", round(jobs / elapsed, 2) if elapsed > 0 else 0.0, ""),
        ("send duration s", round(sent_at - first_send, 1), "SendMessageBatch x10"),
        (
            "all SUBMITTED after s",
            round(submitted_all_at[0] - first_send, 1) if submitted_all_at else "n/a",
            "intake",
        ),
        (
            "job totalSeconds p50 / p95",
            f"{summary(totals).get('p50', 0):.1f} / {summary(totals).get('p95', 0):.1f}",
            f"generation {latency[0]:g}-{latency[1]:g} s",
        ),
        *stage_rows,
        (
            "peak RSS MB (whole stack process)",
            round(resources.peak_rss_mb, 1),
            f"<= {TARGET_RSS_MB:.0f}: {verdict_rss}",
        ),
        ("peak threads", resources.peak_threads, ""),
        ("CPU s / wall s", f"{resources.cpu_seconds:.0f} / {resources.wall_seconds:.0f}", "2 cores"),
    ]
    rows += [
        (f"invocations {name}", count, f"mean {mean_ms[name]} ms") for name, count in sorted(calls.items())
    ]
    rows += [(f"CPU (GIL) samples: {label}", f"{share}%", "py-spy --gil") for label, share in shares[:8]]
    if profiler.error:
        rows.append(("CPU profile", "n/a", profiler.error))
    emit(
        "throughput",
        rows,
        {
            "jobs": jobs,
            "statuses": dict(statuses),
            "generationSecondsRange": list(latency),
            "pollIntervalSeconds": POLL_INTERVAL,
            "elapsedSeconds": round(elapsed, 2),
            "jobsPerSecond": round(jobs / elapsed, 3) if elapsed > 0 else 0.0,
            "allSubmittedSeconds": round(submitted_all_at[0] - first_send, 2) if submitted_all_at else None,
            "jobTotalSeconds": summary(totals),
            "jobGenerationSeconds": summary(generation),
            "stagesAfterFirstSendSeconds": stages,
            "peakRssMB": round(resources.peak_rss_mb, 1),
            "peakThreads": resources.peak_threads,
            "cpuSeconds": round(resources.cpu_seconds, 1),
            "wallSeconds": round(resources.wall_seconds, 1),
            "invocations": calls,
            "invocationMeanMs": mean_ms,
            "profileShares": dict(shares),
            "profileTopFunctions": profiler.functions.most_common(15),
            "profileSamples": profiler.samples,
            "profileError": profiler.error,
            "targets": {"seconds": TARGET_SECONDS, "peakRssMB": TARGET_RSS_MB},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
