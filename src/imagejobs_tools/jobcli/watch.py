"""`imagejobs watch`: poll job records until every job is settled (or a timeout).

Settled: terminal, or its message is in the DLQ (nothing changes until someone redrives it).
A blocked job (bad key, no credits) is not settled: it goes on by itself once that is fixed, so
watch keeps waiting, and says once why it is not moving.

One BatchGetItem (100 keys a call) per tick for the jobs that are not terminal
yet; views show the progress (rich bars on a terminal, plain lines otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from imagejobs.store import JobStatus
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from imagejobs_tools.jobcli.client import JobsClient
from imagejobs_tools.jobcli.records import JobRecord
from imagejobs_tools.jobcli.render import count_of

# Progress steps shown by the bars: a job moves RECEIVED → SUBMITTING → SUBMITTED → terminal.
_STEP: dict[str, int] = {JobStatus.RECEIVED: 1, JobStatus.SUBMITTING: 2, JobStatus.SUBMITTED: 3}
_TOTAL_STEPS = 4
# Above this many jobs a terminal shows one overall bar and status counts, not a bar per job.
MAX_JOB_BARS = 40


@dataclass(frozen=True)
class WatchOutcome:
    records: dict[str, JobRecord | None]
    timed_out: bool
    ticks: int

    def statuses(self) -> dict[str, str | None]:
        return {job_id: (record.status if record else None) for job_id, record in self.records.items()}

    def display_statuses(self) -> dict[str, str]:
        """Statuses as shown (BLOCKED, DEAD_LETTERED derived); NO_RECORD for a job without one."""
        return {
            job_id: (record.display_status if record else "NO_RECORD")
            for job_id, record in self.records.items()
        }

    def all_in(self, expected: Collection[str]) -> bool:
        return all(record is not None and record.status in expected for record in self.records.values())


class WatchView(Protocol):
    def update(self, records: Mapping[str, JobRecord | None], elapsed: float) -> None: ...

    def close(self) -> None: ...


def watch_jobs(
    client: JobsClient,
    job_ids: Sequence[str],
    *,
    interval: float = 2.0,
    timeout: float | None = None,
    view: WatchView | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchOutcome:
    """Poll until every job has a settled record, or `timeout` seconds have passed."""
    ordered_ids = list(dict.fromkeys(job_ids))
    records: dict[str, JobRecord | None] = dict.fromkeys(ordered_ids)
    started = clock()
    ticks = 0
    while True:
        open_ids = [job_id for job_id, record in records.items() if record is None or not record.is_settled]
        if open_ids:
            found = client.batch_get(open_ids)
            for job_id in open_ids:
                if job_id in found:
                    records[job_id] = found[job_id]
        ticks += 1
        elapsed = clock() - started
        if view is not None:
            view.update(records, elapsed)
        if all(record is not None and record.is_settled for record in records.values()):
            return WatchOutcome(records, timed_out=False, ticks=ticks)
        if timeout is not None and elapsed >= timeout:
            return WatchOutcome(records, timed_out=True, ticks=ticks)
        # The last look is at the deadline itself: `--timeout 6` waits 6 s, not the last whole interval.
        sleep(interval if timeout is None else min(interval, timeout - elapsed))


def _describe(record: JobRecord | None) -> str:
    if record is None:
        return "waiting for a record"
    polls = f", {record.polls} polls" if record.polls is not None else ""
    shown = record.display_status
    if shown != record.status:  # BLOCKED / DEAD_LETTERED: say why, the bar alone would just tick
        return f"{shown}: {record.reason}"
    return f"{shown}{polls}"


class PlainView:
    """Without a terminal (CI): one line whenever a job's shown status (or its reason) changes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._last: dict[str, str] = {}

    def update(self, records: Mapping[str, JobRecord | None], elapsed: float) -> None:
        for job_id, record in records.items():
            status = f"{record.display_status} {record.reason or ''}" if record else "NO_RECORD"
            if self._last.get(job_id) != status:
                self._last[job_id] = status
                self._console.print(
                    f"{elapsed:7.1f}s  {job_id}  {_describe(record)}", markup=False, highlight=False
                )

    def close(self) -> None:
        return None


class ProgressView:
    """On a terminal: a rich bar per job (status, polls, elapsed), or one overall bar for many jobs."""

    def __init__(self, console: Console, job_ids: Sequence[str]) -> None:
        self._per_job = len(job_ids) <= MAX_JOB_BARS
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        if self._per_job:
            for job_id in job_ids:
                self._tasks[job_id] = self._progress.add_task(job_id, total=_TOTAL_STEPS, detail="")
        else:
            overall = count_of(len(job_ids), "job")
            self._overall = self._progress.add_task(overall, total=len(job_ids), detail="")
        self._progress.start()

    def update(self, records: Mapping[str, JobRecord | None], elapsed: float) -> None:
        if self._per_job:
            for job_id, record in records.items():
                task = self._tasks[job_id]
                step = (
                    _TOTAL_STEPS
                    if record and record.is_settled
                    else _STEP.get(record.status if record else "", 0)
                )
                # Reaching the total freezes the task's elapsed time (rich's finished_time).
                self._progress.update(task, completed=step, detail=_describe(record))
            return
        counts: dict[str, int] = {}
        for record in records.values():
            status = record.display_status if record else "NO_RECORD"
            counts[status] = counts.get(status, 0) + 1
        done = sum(1 for record in records.values() if record is not None and record.is_settled)
        detail = " ".join(f"{status}={count}" for status, count in sorted(counts.items()))
        self._progress.update(self._overall, completed=done, detail=detail)

    def close(self) -> None:
        self._progress.stop()


def make_view(console: Console, job_ids: Sequence[str]) -> WatchView:
    return ProgressView(console, job_ids) if console.is_terminal else PlainView(console)
