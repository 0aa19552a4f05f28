"""`imagejobs batch status`: progress, credits and ETA from a batch item and its records (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from imagejobs_tools.jobcli.batchstatus import (
    RATE_WINDOW_SECONDS,
    batch_progress,
    completion_rate,
    eta_seconds,
    progress_lines,
    terminal_counts,
)
from imagejobs_tools.jobcli.records import parse_timestamp

NOW = parse_timestamp("2026-01-01T12:00:00Z").timestamp()  # type: ignore[union-attr]


def _batch(**fields: Any) -> dict[str, Any]:
    return {
        "jobId": "batch#b-1",
        "batchId": "b-1",
        "batchStatus": "OPEN",
        "bucket": "out",
        "resultsKey": "batch-results/b-1.results.jsonl",
        "summaryKey": "batch-results/b-1.summary.json",
        "source": {"file": "jobs.jsonl"},
        "createdAt": "2026-01-01T11:00:00Z",
        "done": 0,
        **fields,
    }


def _record(line: int, status: str, at: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"jobId": f"b-1-{line}", "batchLine": line, "status": status, "completedAt": at, **fields}


def test_the_rate_counts_the_jobs_finished_in_the_window_over_its_length() -> None:
    finished = [NOW - 30, NOW - 90, NOW - RATE_WINDOW_SECONDS - 1]  # the last is outside the window
    assert completion_rate(finished, None, NOW) == pytest.approx(2 / RATE_WINDOW_SECONDS)
    # A batch younger than the window: over its age, not the whole window.
    assert completion_rate(finished, NOW - 120, NOW) == pytest.approx(2 / 120)
    assert completion_rate([NOW - RATE_WINDOW_SECONDS - 5], None, NOW) is None
    assert completion_rate([], None, NOW) is None


def test_the_eta_is_the_remaining_jobs_at_the_rate_and_unknown_without_one() -> None:
    assert eta_seconds(30, 0.5) == 60
    assert eta_seconds(0, None) == 0  # nothing left: no rate needed
    assert eta_seconds(30, None) is None
    assert eta_seconds(None, 0.5) is None  # the batch's size is not known yet


def test_the_counters_are_the_terminal_statuses_only() -> None:
    batch = _batch(countCOMPLETED=3, countFAILED=1, countSomethingElse=9, done=4)
    assert terminal_counts(batch) == {"COMPLETED": 3, "FAILED": 1}


def test_a_running_batch_sums_credits_over_its_records_and_estimates_the_rest() -> None:
    batch = _batch(expected=10, done=4, countCOMPLETED=3, countFAILED=1)
    records = [
        _record(1, "COMPLETED", "2026-01-01T11:59:00Z", creditsUsed=3),
        _record(2, "COMPLETED", "2026-01-01T11:58:00Z", creditsUsed=3),
        _record(3, "COMPLETED", "2026-01-01T11:40:00Z", creditsUsed=3),  # outside the window
        _record(4, "FAILED", "2026-01-01T11:57:00Z", creditsUsed=3, creditsRefunded=True),
        _record(5, "SUBMITTED"),
        _record(6, "RECEIVED"),
    ]

    progress = batch_progress(batch, records, NOW)

    assert (progress.done, progress.expected, progress.remaining) == (4, 10, 6)
    assert progress.terminal == {"COMPLETED": 3, "FAILED": 1}
    assert progress.running == {"RECEIVED": 1, "SUBMITTED": 1}
    assert (progress.credits_used, progress.credits_refunded, progress.credits_spent) == (12, 3, 9)
    assert progress.credits_from == "records"
    assert progress.rate_per_minute == pytest.approx(0.3)  # 3 jobs in 10 minutes
    assert progress.eta_seconds == pytest.approx(6 / (3 / RATE_WINDOW_SECONDS))
    lines = progress_lines(progress)
    assert any(line.split() == ["progress", "4", "of", "10", "done", "(40%)"] for line in lines)
    assert any(line.startswith("eta") and line.endswith("20m00s") for line in lines)
    assert any("s3://out/batch-results/b-1.results.jsonl (written when" in line for line in lines)


def test_a_batch_still_being_read_has_no_size_and_an_unknown_eta() -> None:
    progress = batch_progress(
        _batch(done=1, countCOMPLETED=1), [_record(1, "COMPLETED", "2026-01-01T11:59:30Z")], NOW
    )

    assert progress.expected is None and progress.eta_seconds is None
    text = "\n".join(progress_lines(progress))
    assert "still reading the batch" in text and "unknown" in text
    shown = progress.to_json()
    assert (shown["remaining"], shown["etaSeconds"], shown["batchStatus"]) == (None, None, "OPEN")


def test_a_completed_batch_takes_its_credits_from_the_summary_and_reads_no_records() -> None:
    summary = {"creditsUsed": 30, "creditsRefunded": 6, "jobs": 10}
    batch = _batch(batchStatus="COMPLETED", expected=10, done=10, countCOMPLETED=10, summary=summary,
                   completedAt="2026-01-01T11:59:59Z")  # fmt: skip

    def never() -> Any:
        raise AssertionError("a COMPLETED batch's records are not read")
        yield

    progress = batch_progress(batch, never(), NOW)

    assert (progress.credits_used, progress.credits_spent, progress.credits_from) == (30, 24, "summary")
    assert progress.eta_seconds is None and progress.running == {}
    text = "\n".join(progress_lines(progress))
    assert "completed  2026-01-01T11:59:59Z" in text and "written when" not in text
