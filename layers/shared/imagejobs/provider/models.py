"""What the provider answers, parsed: a submission, a task snapshot, and the ports the pipeline's
functions need of the provider (ProviderClient implements both; test fakes are checked against them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

__all__ = [
    "Submission",
    "TaskReader",
    "TaskSnapshot",
    "TaskStatus",
    "TaskSubmitter",
    "parse_snapshot",
    "parse_status",
]

logger = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


_STATUS_CODES = {0: TaskStatus.PENDING, 1: TaskStatus.COMPLETED, 2: TaskStatus.FAILED}


@dataclass(frozen=True)
class Submission:
    task_id: str
    credits_used: int
    status: TaskStatus


@dataclass(frozen=True)
class TaskSnapshot:
    task_id: str
    kind: Literal["image", "video"] | None
    status: TaskStatus
    output_urls: tuple[str, ...]  # the image URLs, or the video URL
    error_code: str | None
    error_message: str | None
    credits_used: int | None
    credits_refunded: bool | int | None
    created_at: str | None
    completed_at: str | None
    updated_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status is not TaskStatus.PENDING


class TaskSubmitter(Protocol):
    """What IntakeFunction needs of the provider (ProviderClient; test fakes)."""

    def submit_image(self, body: Mapping[str, Any]) -> Submission: ...

    def submit_video(self, body: Mapping[str, Any]) -> Submission: ...


class TaskReader(Protocol):
    """What PollFunction needs of the provider (ProviderClient; test fakes)."""

    def get_task(self, task_id: str) -> TaskSnapshot: ...


def as_int(value: Any) -> int | None:
    """An integer the provider sent as an int, an integral float or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def parse_status(value: Any) -> TaskStatus | None:
    """0/1/2 (the documented ints) or the status names; None when unrecognised."""
    code = as_int(value)
    if code is not None:
        return _STATUS_CODES.get(code)
    if isinstance(value, str):
        try:
            return TaskStatus(value.strip().upper())
        except ValueError:
            return None
    return None


def parse_snapshot(data: Mapping[str, Any], requested_task_id: str) -> TaskSnapshot:
    """Build a snapshot from either documented shape (quickstart or API reference).

    Unknown fields are kept in ``raw`` and otherwise ignored.
    """
    status = parse_status(data.get("status"))
    if status is None:
        # An undocumented status: keep polling until the deadline rather than guess terminal.
        logger.warning("provider returned an unknown task status %r; treating as pending", data.get("status"))
        status = TaskStatus.PENDING
    urls: list[str] = []
    for key in ("outputImageUrls", "imageUrls"):
        values = data.get(key)
        if isinstance(values, list):
            urls.extend(url for url in values if isinstance(url, str) and url and url not in urls)
    video_url = as_str(data.get("videoUrl"))
    if video_url and video_url not in urls:
        urls.append(video_url)
    kind = data.get("type")
    refunded: Any = next(
        (data[key] for key in ("creditsRefunded", "creditRefunded") if data.get(key) is not None), None
    )
    if not isinstance(refunded, bool):
        refunded = as_int(refunded)
    return TaskSnapshot(
        task_id=as_str(data.get("id")) or as_str(data.get("taskId")) or requested_task_id,
        kind=kind if kind in ("image", "video") else None,
        status=status,
        output_urls=tuple(urls),
        error_code=as_str(data.get("errorCode")),
        error_message=as_str(data.get("errorMessage")),
        credits_used=as_int(data.get("creditsUsed")),
        credits_refunded=refunded,
        created_at=as_str(data.get("createdAt")),
        completed_at=as_str(data.get("completedAt")),
        updated_at=as_str(data.get("updatedAt")),
        raw=dict(data),
    )
