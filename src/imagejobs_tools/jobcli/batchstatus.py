"""`imagejobs batch status`: a batch's progress, credits and ETA from its batch item and records.

The batch item's counters say how many jobs are terminal, by status (counted once each from the
change stream); `expected` is absent until the intake has read the whole batch. Credits come from
the summary once the batch is COMPLETED, else are summed over the records (the `ByBatch` index).
The ETA is the remaining jobs at the recent completion rate: the jobs that became terminal in the
last `RATE_WINDOW_SECONDS` (or since the batch was opened, if later), over that time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from imagejobs.batch_results import SummaryBuilder
from imagejobs.batches import COMPLETED, COUNT_PREFIX, BatchFiles

from imagejobs_tools.jobcli.records import TERMINAL_STATUSES, parse_timestamp
from imagejobs_tools.jobcli.render import format_columns, format_seconds

RATE_WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class BatchProgress:
    batch_id: str
    batch_status: str  # OPEN, WRITING (its results being written), COMPLETED
    source: Mapping[str, Any] | None
    expected: int | None  # None: the intake is still reading the batch
    done: int
    terminal: dict[str, int]  # the batch item's counters
    running: dict[str, int]  # the records not terminal yet, by status (not once COMPLETED)
    credits_used: int
    credits_refunded: int
    credits_from: str  # "summary" or "records"
    rate_per_minute: float | None
    eta_seconds: float | None  # None: unknown (no rate, or the batch size not known yet)
    results_uri: str
    summary_uri: str
    completed_at: str | None

    @property
    def credits_spent(self) -> int:
        return self.credits_used - self.credits_refunded

    @property
    def remaining(self) -> int | None:
        return None if self.expected is None else max(0, self.expected - self.done)

    def to_json(self) -> dict[str, Any]:
        """`--json`: the fields in the records' camelCase, with the derived ones."""
        fields = {_camel(name): value for name, value in asdict(self).items()}
        return {**fields, "creditsSpent": self.credits_spent, "remaining": self.remaining}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def terminal_counts(batch: Mapping[str, Any]) -> dict[str, int]:
    """The batch item's `count<STATUS>` counters (the statuses its jobs ended in)."""
    return {
        name.removeprefix(COUNT_PREFIX): int(value)
        for name, value in sorted(batch.items())
        if name.startswith(COUNT_PREFIX) and name.removeprefix(COUNT_PREFIX) in TERMINAL_STATUSES
    }


def completion_rate(
    finished_at: Iterable[float], opened_at: float | None, now: float, window: float = RATE_WINDOW_SECONDS
) -> float | None:
    """Jobs a second over the last `window` seconds (or since `opened_at`, if later); None: none."""
    recent = sum(1 for moment in finished_at if now - window <= moment <= now)
    span = window if opened_at is None else min(window, now - opened_at)
    return recent / span if recent and span > 0 else None


def eta_seconds(remaining: int | None, rate_per_second: float | None) -> float | None:
    if remaining == 0:
        return 0.0
    if remaining is None or rate_per_second is None:
        return None
    return remaining / rate_per_second


def _epoch(value: Any) -> float | None:
    moment = parse_timestamp(value)
    return None if moment is None else moment.timestamp()


def batch_progress(
    batch: Mapping[str, Any], records: Iterable[Mapping[str, Any]], now: float
) -> BatchProgress:
    """The progress of a batch item; `records` (its jobs) are read only while it is not COMPLETED."""
    files = BatchFiles.of(batch)
    expected = None if batch.get("expected") is None else int(batch["expected"])
    done = int(batch.get("done") or 0)
    completed = batch.get("batchStatus") == COMPLETED
    running: dict[str, int] = {}
    rate = None
    if completed:
        summary = batch.get("summary") or {}
        used, refunded = int(summary.get("creditsUsed") or 0), int(summary.get("creditsRefunded") or 0)
    else:
        totals = SummaryBuilder()
        finished: list[float] = []
        for record in records:
            totals.add(record)
            if record.get("status") in TERMINAL_STATUSES:
                # REJECTED records have no completedAt: they were terminal when last updated.
                at = _epoch(record.get("completedAt") or record.get("updatedAt"))
                if at is not None and now - at <= RATE_WINDOW_SECONDS:
                    finished.append(at)
        running = {s: n for s, n in sorted(totals.by_status.items()) if s not in TERMINAL_STATUSES}
        used, refunded = totals.credits_used, totals.credits_refunded
        rate = completion_rate(finished, _epoch(batch.get("createdAt")), now)
    remaining = None if expected is None else max(0, expected - done)
    return BatchProgress(
        batch_id=str(batch["batchId"]),
        batch_status=str(batch.get("batchStatus") or "?"),
        source=batch.get("source"),
        expected=expected,
        done=done,
        terminal=terminal_counts(batch),
        running=running,
        credits_used=used,
        credits_refunded=refunded,
        credits_from="summary" if completed else "records",
        rate_per_minute=None if rate is None else round(rate * 60, 2),
        eta_seconds=None if completed else eta_seconds(remaining, rate),
        results_uri=f"s3://{files.bucket}/{files.results_key}",
        summary_uri=f"s3://{files.bucket}/{files.summary_key}",
        completed_at=batch.get("completedAt"),
    )


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in counts.items()) or "-"


def progress_lines(progress: BatchProgress) -> list[str]:
    """`imagejobs batch status`: one row per fact, plain columns."""
    if progress.expected is None:
        done = f"{progress.done} done; still reading the batch (its size is not known yet)"
    else:
        share = f" ({100 * progress.done // progress.expected}%)" if progress.expected else ""
        done = f"{progress.done} of {progress.expected} done{share}"
    credits = (
        f"used {progress.credits_used}, refunded {progress.credits_refunded}, spent {progress.credits_spent}"
        + ("" if progress.credits_from == "summary" else " (so far, from the records)")
    )
    written = progress.batch_status == COMPLETED
    rows = [
        ("batch", f"{progress.batch_id} ({progress.batch_status})"),
        ("source", ", ".join(f"{k}={v}" for k, v in (progress.source or {}).items()) or "-"),
        ("progress", done),
        ("finished", _tally(progress.terminal)),
    ]
    if not written:
        rows.append(("running", _tally(progress.running)))
    rows.append(("credits", credits))
    if written:
        rows.append(("completed", str(progress.completed_at or "-")))
    else:
        minutes = RATE_WINDOW_SECONDS / 60
        rate = progress.rate_per_minute
        rows.append(
            (
                "rate",
                f"{rate:g} jobs/min (last {minutes:g} min)" if rate else f"none in the last {minutes:g} min",
            )
        )
        eta = progress.eta_seconds
        rows.append(("eta", "unknown" if eta is None else format_seconds(eta)))
    note = "" if written else " (written when every job is terminal)"
    rows += [("results", progress.results_uri + note), ("summary", progress.summary_uri + note)]
    return format_columns(("", ""), rows)[1:]  # no header row
