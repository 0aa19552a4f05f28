"""A read-only view of the DynamoDB job record (docs/architecture.md, "Job record")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from imagejobs.store import ACTIVE, TERMINAL, JobStatus

TERMINAL_STATUSES = TERMINAL  # the domain's one set
ALL_STATUSES = (*ACTIVE, *sorted(TERMINAL))
# Derived display states (never stored): a RECEIVED job whose last submit failed for a reason
# that retries cannot fix (docs/cli.md), and an unfinished job whose message went to the DLQ.
BLOCKED = "BLOCKED"
DISPLAY_KEY = "display"  # the key `--json` adds to a record for the derived fields
DEAD_LETTERED = "DEAD_LETTERED"
# A RECEIVED job whose claim found no room in the day's credit budget (docs/control.md).
WAITING_FOR_BUDGET = "WAITING_FOR_BUDGET"
# lastSubmitError codes (intake stores the provider error's class name) that block a job until
# someone acts: the key is wrong or missing, or the balance is empty. It resumes on its own after.
BLOCKING_SUBMIT_ERRORS = {
    "ProviderUnauthorized": "provider rejected the API key (401)",
    "InsufficientCredits": "insufficient provider credits (402)",
    "SecretNotConfigured": "the provider API key is not configured",
}


def plain(value: Any) -> Any:
    """DynamoDB values (Decimal, sets) as JSON-friendly Python values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return value


def parse_timestamp(value: Any) -> datetime | None:
    """Record timestamps: ISO 8601 strings (with Z or offset) or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float | Decimal):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class OutputObject:
    bucket: str
    key: str
    uri: str | None
    bytes: int | None
    sha256: str | None
    content_type: str | None


@dataclass(frozen=True)
class JobRecord:
    """The fields the CLI shows; `data` keeps the whole record (plain values)."""

    data: Mapping[str, Any]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> JobRecord:
        return cls(data=plain(item))

    @property
    def job_id(self) -> str:
        return str(self.data.get("jobId", ""))

    @property
    def status(self) -> str:
        return str(self.data.get("status", "?"))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def last_submit_error(self) -> Mapping[str, Any] | None:
        error = self.data.get("lastSubmitError")
        return error if isinstance(error, Mapping) and error else None

    @property
    def blocked_reason(self) -> str | None:
        """Why a RECEIVED job is not moving (a bad or missing key, no credits), or None."""
        error = self.last_submit_error
        if self.status != JobStatus.RECEIVED or error is None:
            return None
        code = str(error.get("code") or "")
        if code not in BLOCKING_SUBMIT_ERRORS:
            return None
        message = " ".join(str(error.get("message") or "").split())
        return message or BLOCKING_SUBMIT_ERRORS[code]

    @property
    def dead_letter(self) -> Mapping[str, Any] | None:
        """`deadLettered` on an unfinished record: its message's last receive failed (now in the DLQ)."""
        entry = self.data.get("deadLettered")
        if self.is_terminal or not isinstance(entry, Mapping) or not entry:
            return None
        return entry

    @property
    def budget_wait_reason(self) -> str | None:
        """Why a RECEIVED job waits for credit budget (`budgetWait`, cleared by its claim), or None."""
        wait = self.data.get("budgetWait")
        if self.status != JobStatus.RECEIVED or not isinstance(wait, Mapping) or not wait:
            return None
        return str(wait.get("reason") or "waiting for credit budget")

    @property
    def display_status(self) -> str:
        """The status as the CLI shows it: the stored one, or DEAD_LETTERED / BLOCKED /
        WAITING_FOR_BUDGET (derived)."""
        if self.dead_letter is not None:
            return DEAD_LETTERED
        if self.blocked_reason is not None:
            return BLOCKED
        if self.budget_wait_reason is not None:
            return WAITING_FOR_BUDGET
        return self.status

    @property
    def is_settled(self) -> bool:
        """Nothing more happens without someone acting: terminal, or its message is in the DLQ."""
        return self.is_terminal or self.dead_letter is not None

    @property
    def reason(self) -> str | None:
        """One short line on why the job is where it is (REJECTED, FAILED, blocked, in the DLQ...)."""
        dead = self.dead_letter
        if dead is not None:
            why = str(dead.get("reason") or "").strip()
            return "message moved to the dead-letter queue" + (f": {why}" if why else "")
        blocked = self.blocked_reason or self.budget_wait_reason
        if blocked is not None:
            return blocked
        error = self.error
        if error is not None and self.is_terminal:
            field_errors = error.get("fieldErrors")
            if isinstance(field_errors, Mapping) and field_errors:
                name, messages = next(iter(field_errors.items()))
                first = messages[0] if isinstance(messages, list) and messages else messages
                return f"{name}: {first}"
            code = str(error.get("code") or "")
            message = " ".join(str(error.get("message") or "").split())
            return ": ".join(part for part in (code, message) if part) or None
        return None

    @property
    def upload_key(self) -> str | None:
        """The S3 key of the upload a record was made from (S3 intake), when it says so."""
        upload = self.data.get("upload")
        if isinstance(upload, Mapping) and upload.get("key"):
            return str(upload["key"])
        return None

    def to_json(self) -> dict[str, Any]:
        """What `--json` prints: the whole record, plus `display` (derived here, never stored)."""
        derived: dict[str, Any] = {"status": self.display_status, "reason": self.reason}
        if self.upload_key is not None:
            derived["uploadKey"] = self.upload_key
        return {**self.data, DISPLAY_KEY: derived}

    @property
    def model(self) -> str | None:
        model = self.data.get("model")
        if model is None:
            request = self.data.get("request")
            model = request.get("model") if isinstance(request, Mapping) else None
        return None if model is None else str(model)

    @property
    def prompt(self) -> str | None:
        prompt = self.data.get("prompt")
        return None if prompt is None else str(prompt)

    @property
    def polls(self) -> int | None:
        polls = self.data.get("polls")
        return polls if isinstance(polls, int) else None

    @property
    def credits_used(self) -> int | None:
        credits = self.data.get("creditsUsed")
        return credits if isinstance(credits, int) else None

    @property
    def credits_refunded(self) -> Any:
        return self.data.get("creditsRefunded")

    @property
    def created_at(self) -> datetime | None:
        return parse_timestamp(self.data.get("createdAt"))

    @property
    def updated_at(self) -> datetime | None:
        return parse_timestamp(self.data.get("updatedAt"))

    @property
    def history(self) -> list[Mapping[str, Any]]:
        history = self.data.get("statusHistory")
        return [h for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []

    @property
    def error(self) -> Mapping[str, Any] | None:
        error = self.data.get("error")
        return error if isinstance(error, Mapping) and error else None

    @property
    def outputs(self) -> list[OutputObject]:
        raw = self.data.get("outputs")
        if not isinstance(raw, list):
            return []
        outputs = []
        for entry in raw:
            if not isinstance(entry, Mapping) or not entry.get("bucket") or not entry.get("key"):
                continue
            size = entry.get("bytes")
            outputs.append(
                OutputObject(
                    bucket=str(entry["bucket"]),
                    key=str(entry["key"]),
                    uri=entry.get("uri"),
                    bytes=size if isinstance(size, int) else None,
                    sha256=entry.get("sha256") or None,
                    content_type=entry.get("contentType") or None,
                )
            )
        return outputs

    def latency_seconds(self, now: datetime | None = None) -> float | None:
        """`latency.totalSeconds` when the pipeline recorded it, else createdAt → updatedAt (or now)."""
        latency = self.data.get("latency")
        if isinstance(latency, Mapping) and isinstance(latency.get("totalSeconds"), int | float):
            return float(latency["totalSeconds"])
        start = self.created_at
        end = self.updated_at if self.is_terminal else (now or datetime.now(UTC))
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())
