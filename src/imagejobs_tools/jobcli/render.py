"""How job records look as text: status, list and watch summary lines (no wrapping, ids never cut)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imagejobs.store import JobStatus

from imagejobs_tools.jobcli.records import BLOCKED, DEAD_LETTERED, JobRecord

if TYPE_CHECKING:
    from imagejobs.budget import BudgetDay

PROMPT_WIDTH = 80


def count_of(number: int, noun: str) -> str:
    """A count people read: "1 job", "2 jobs" (plural by adding s)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def truncate(text: str | None, width: int = PROMPT_WIDTH) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def format_credits(record: JobRecord) -> str:
    used = record.credits_used
    refunded = record.credits_refunded
    text = "-" if used is None else str(used)
    if refunded not in (None, False, 0):
        text += " (refunded)" if refunded is True else f" (refunded {refunded})"
    return text


def output_keys(record: JobRecord) -> str:
    return ", ".join(output.key for output in record.outputs) or "-"


REASON_WIDTH = 60


def status_text(record: JobRecord) -> str:
    """The status with what it is derived from: `BLOCKED (reason)`, `DEAD_LETTERED (RECEIVED; ...)`."""
    shown = record.display_status
    if shown == BLOCKED:
        return f"{BLOCKED} ({record.blocked_reason})"
    if shown == DEAD_LETTERED:
        return f"{DEAD_LETTERED} (record {record.status}; {record.reason})"
    return shown


def reason_text(record: JobRecord, width: int = REASON_WIDTH) -> str:
    """The list's reason column: why a job is REJECTED, FAILED, blocked...; an upload's S3 key first."""
    reason = record.reason
    key = record.upload_key
    if key is not None and record.status == JobStatus.REJECTED:
        return f"{key}: {truncate(reason, width)}" if reason else key
    return truncate(reason, width) or "-"


def status_lines(record: JobRecord) -> list[str]:
    """`imagejobs status JOB_ID`: the record's essentials and its history."""
    lines: list[str] = []
    rows: list[tuple[str, str]] = [
        ("job", record.job_id),
        ("status", status_text(record)),
        ("model", record.model or "-"),
        ("prompt", truncate(record.prompt) or "-"),
        ("credits", format_credits(record)),
        ("created", str(record.data.get("createdAt", "-"))),
        ("updated", str(record.data.get("updatedAt", "-"))),
        ("latency", format_seconds(record.latency_seconds())),
    ]
    if record.upload_key is not None:
        rows.append(("upload", str(record.data["upload"].get("uri") or record.upload_key)))
    for name in ("taskId", "polls", "submitAttempts"):
        if record.data.get(name) is not None:
            rows.append((name, str(record.data[name])))
    last_error = record.last_submit_error
    if last_error is not None and not record.is_terminal:
        at = f" at {last_error['at']}" if last_error.get("at") else ""
        message = truncate(str(last_error.get("message") or ""), 200)
        rows.append(("lastSubmitError", f"{last_error.get('code', '?')}: {message}{at}"))
        if record.blocked_reason is not None:
            rows.append(("note", "the queue retries it; once the key or balance is fixed it goes on"))
    executions = record.data.get("executions")
    if isinstance(executions, list) and executions:  # a long job handed over to fresh executions
        rows.append(("executions", " -> ".join(str(name) for name in executions)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        lines.append(f"{name:<{width}}  {value}")

    history = record.history
    if history:
        lines.append("history:")
        for entry in history:
            detail = f"  {entry['detail']}" if entry.get("detail") else ""
            lines.append(f"  {entry.get('at', '?')}  {entry.get('status', '?')}{detail}")
    outputs = record.outputs
    if outputs:
        lines.append("outputs:")
        for output in outputs:
            size = "" if output.bytes is None else f"  {output.bytes} bytes"
            kind = f"  {output.content_type}" if output.content_type else ""
            lines.append(f"  {output.uri or f's3://{output.bucket}/{output.key}'}{size}{kind}")
    error = record.error
    if error:
        code = f" {error['code']}" if error.get("code") else ""
        lines.append(f"error: [{error.get('source', '?')}]{code}: {error.get('message', '')}")
        field_errors = error.get("fieldErrors")
        if isinstance(field_errors, Mapping):
            for field_name, messages in field_errors.items():
                texts = messages if isinstance(messages, list) else [messages]
                for message in texts:
                    lines.append(f"  {field_name}: {message}")
    return lines


def format_columns(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded (it may be long).

    Plain text on purpose: job ids are never cut or wrapped, whatever the console width.
    """
    all_rows = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers) - 1)]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def list_lines(records: Sequence[JobRecord]) -> list[str]:
    """`imagejobs list`: one line per record."""
    return format_columns(
        ("jobId", "status", "updated", "model", "credits", "reason", "prompt"),
        (
            (
                record.job_id,
                record.display_status,
                str(record.data.get("updatedAt", "-")),
                record.model or "-",
                format_credits(record),
                reason_text(record),
                truncate(record.prompt, 40),
            )
            for record in records
        ),
    )


def summary_lines(job_ids: Sequence[str], records: Mapping[str, JobRecord | None]) -> list[str]:
    """The table `watch` prints at the end (the reason column only when some job has one)."""
    rows = []
    with_reason = any(record is not None and record.reason for record in records.values())
    for job_id in job_ids:
        record = records.get(job_id)
        if record is None:
            rows.append([job_id, "NO_RECORD", "-", "-", "-", "-"] + (["-"] if with_reason else []))
            continue
        row = [
            job_id,
            record.display_status,
            record.model or "-",
            format_credits(record),
            format_seconds(record.latency_seconds()),
        ]
        if with_reason:
            row.append(reason_text(record))
        rows.append([*row, output_keys(record)])
    headers = [
        "jobId",
        "status",
        "model",
        "credits",
        "latency",
        *(["reason"] if with_reason else []),
        "outputs",
    ]
    return format_columns(headers, rows)


def record_json(record: JobRecord | None, job_id: str) -> dict[str, Any]:
    if record is None:
        return {"jobId": job_id, "status": None}
    return record.to_json()


def budget_lines(day: BudgetDay, *, batch: bool = False) -> list[str]:
    """`imagejobs budget`: one UTC day's counters, or (``batch``) one batch's."""
    parameter = "CreditBudgetPerBatch" if batch else "CreditBudgetPerDay"
    limit = f"{day.limit} credits" if day.limit > 0 else f"none ({parameter} = 0: nothing is counted)"
    available = "unlimited" if day.available is None else str(day.available)
    return format_columns(
        ("credit budget", f"batch {day.day}" if batch else f"{day.day} (UTC)"),
        [
            ("limit", limit),
            ("spent", str(day.spent)),
            ("reserved", str(day.reserved)),
            ("available", available),
        ],
    )
