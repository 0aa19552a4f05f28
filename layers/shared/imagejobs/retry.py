"""Re-sending finished jobs as new ones (`imagejobs retry`, docs/control.md).

A retry of job ``X`` is a new job ``X-r1`` (then ``X-r2`` when ``X-r1`` fails too), with
``retryOf: X`` and the same request and batch. The original records ``retriedAs`` first, with a
conditional write, so two retries of one batch never send a job twice; a retry whose message did
not get sent (its job has no record) is sent again by the next run, under the same id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from imagejobs import jobs
from imagejobs.store import JobStatus

RETRYABLE = (JobStatus.FAILED, JobStatus.TIMED_OUT)
# May already have been charged: only on request, with a warning (docs/control.md).
MAYBE_CHARGED = (JobStatus.SUBMIT_UNKNOWN,)
_RETRY_SUFFIX = re.compile(r"-r(\d+)$")


def retry_id(record: Mapping[str, Any]) -> str:
    """``<original>-r<n+1>``: the original is the record's ``retryOf`` or the record itself."""
    job_id = str(record["jobId"])
    original = str(record.get("retryOf") or job_id)
    match = _RETRY_SUFFIX.search(job_id) if original != job_id else None
    return f"{original}-r{int(match.group(1)) + 1 if match else 1}"


def retry_message(record: Mapping[str, Any], new_id: str) -> dict[str, Any]:
    """The job message of the retry: the recorded request, under the new id, linked to the original."""
    request = dict(record.get("request") or {})
    request.pop("kind", None)  # derived by the intake from the model, not a message field
    # In the batch, not of its lines: the line's own job stays the one its results count.
    request.pop("batchLine", None)
    message = {**request, "jobId": new_id, "retryOf": str(record.get("retryOf") or record["jobId"])}
    if record.get("batchId"):
        message["batchId"] = record["batchId"]
    return message


def retry_problem(record: Mapping[str, Any]) -> str | None:
    """Why a record cannot be retried (None: it can)."""
    if not isinstance(record.get("request"), Mapping) or not record["request"].get("prompt"):
        return "its record keeps no request to re-send"
    problem = jobs.job_id_problem(retry_id(record))
    return None if problem is None else f"its retry id {problem}"
