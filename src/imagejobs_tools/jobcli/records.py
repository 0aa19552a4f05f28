"""A read-only view of the DynamoDB job record (docs/architecture.md, "Job record")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "REJECTED", "SUBMIT_UNKNOWN"})
ALL_STATUSES = (
    "RECEIVED",
    "SUBMITTING",
    "SUBMITTED",
    "COMPLETED",
    "FAILED",
    "TIMED_OUT",
    "REJECTED",
    "SUBMIT_UNKNOWN",
)


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
