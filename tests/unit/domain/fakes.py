"""Shared test doubles: a moto job table, a scripted fake provider, a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagejobs.provider import Submission, TaskReader, TaskSnapshot, TaskStatus, TaskSubmitter

from imagejobs_tools.local.template import jobs_table_definition


def create_jobs_table(dynamodb: Any, name: str = "imagejobs-jobs") -> Any:
    """The table as the template declares it: key jobId, GSI ByStatus (status, updatedAt)."""
    return dynamodb.create_table(TableName=name, **jobs_table_definition())


@dataclass
class Clock:
    now: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def snapshot(
    task_id: str = "tsk_1",
    status: TaskStatus = TaskStatus.PENDING,
    *,
    output_urls: tuple[str, ...] = (),
    error_code: str | None = None,
    error_message: str | None = None,
    credits_used: int | None = 3,
    credits_refunded: bool | int | None = False,
    completed_at: str | None = None,
    kind: str = "image",
) -> TaskSnapshot:
    return TaskSnapshot(
        task_id=task_id,
        kind=kind,  # type: ignore[arg-type]
        status=status,
        output_urls=output_urls,
        error_code=error_code,
        error_message=error_message,
        credits_used=credits_used,
        credits_refunded=credits_refunded,
        created_at="2026-01-01T00:00:00.000Z",
        completed_at=completed_at,
        updated_at=completed_at,
        raw={},
    )


@dataclass
class FakeProvider:
    """Same methods as ProviderClient; ``submit_error``/``task_error`` are raised when set.

    ``on_submit`` runs inside submit (e.g. to simulate a concurrent worker).
    """

    submit_error: Exception | None = None
    task_error: Exception | None = None
    snapshots: list[TaskSnapshot] = field(default_factory=list)
    credits: int = 3
    submissions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)
    on_submit: Callable[[], None] | None = None

    def _submit(self, kind: str, body: Mapping[str, Any]) -> Submission:
        if self.on_submit:
            self.on_submit()
        self.submissions.append((kind, dict(body)))
        if self.submit_error is not None:
            raise self.submit_error
        return Submission(
            task_id=f"tsk_{len(self.submissions)}", credits_used=self.credits, status=TaskStatus.PENDING
        )

    def submit_image(self, body: Mapping[str, Any]) -> Submission:
        return self._submit("image", body)

    def submit_video(self, body: Mapping[str, Any]) -> Submission:
        return self._submit("video", body)

    def get_task(self, task_id: str) -> TaskSnapshot:
        self.polls.append(task_id)
        if self.task_error is not None:
            raise self.task_error
        if len(self.snapshots) > 1:
            return self.snapshots.pop(0)
        return self.snapshots[0] if self.snapshots else snapshot(task_id)


if TYPE_CHECKING:  # the fake stands in for both ports (`make typecheck` checks this file)
    _as_submitter: TaskSubmitter = FakeProvider()
    _as_reader: TaskReader = FakeProvider()
