"""Powertools Logger/Metrics/Tracer shared by every function, plus redaction helpers.

Secrets never reach logs: URLs are logged without their query string (presigned
signatures live there) and bearer tokens / API keys are masked in free text.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "imagejobs"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "ImageJobs"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Powertools warns, to stderr and so to CloudWatch, on every invocation that adds no metric (most
# polls, S3's test event): paid-for log lines that say nothing.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
F = TypeVar("F", bound=Callable[..., Any])


tracer = Tracer(service=SERVICE)

# Metric names (namespace ImageJobs).
JOBS_SUBMITTED = "JobsSubmitted"
JOBS_REJECTED = "JobsRejected"
JOBS_COMPLETED = "JobsCompleted"
JOBS_FAILED = "JobsFailed"
JOBS_TIMED_OUT = "JobsTimedOut"
SUBMIT_UNKNOWN = "SubmitUnknown"
BUDGET_WAITS = "BudgetWaits"  # claims refused for want of room in the day's credit budget
CREDITS_USED = "CreditsUsed"
CREDITS_REFUNDED = "CreditsRefunded"
JOB_LATENCY_SECONDS = "JobLatencySeconds"
DETECTION_DELAY_SECONDS = "DetectionDelaySeconds"


def count(name: str, value: float = 1) -> None:
    _add(name, MetricUnit.Count, value)


def seconds(name: str, value: float) -> None:
    _add(name, MetricUnit.Seconds, max(0.0, value))


def _add(name: str, unit: MetricUnit, value: float) -> None:
    # Kept with one invocation per process, as on AWS: with POWERTOOLS_METRICS_DISABLED, Powertools 3.x
    # skips the flush but not the collection, so values pile up across a warm environment's
    # invocations and add_metric prints them (EMF, i.e. published) once one metric reaches 100
    # values. Disabled means not collected at all.
    if is_metrics_disabled():
        return
    metrics.add_metric(name=name, unit=unit, value=value)


# Keys that describe the job being handled; one job's keys never outlive it (a batch's next
# record, a rejected message, must not inherit them).
JOB_KEYS = ("correlation_id", "job_id", "task_id", "model", "kind")


def bind_job(job_id: str, **keys: object) -> None:
    """Make the job id the correlation id of every following log line, with `keys` (task_id,
    model, kind); keys of an earlier job are dropped first."""
    current = logger.get_current_keys()
    merged: dict[str, object] = {}
    if current.get("job_id") == job_id:  # the same job again: keep what it already said
        merged.update({key: current[key] for key in ("task_id", "model", "kind") if key in current})
    merged.update(keys)
    logger.remove_keys(JOB_KEYS)
    logger.append_keys(correlation_id=job_id, job_id=job_id, **merged)


def unbind_job() -> None:
    logger.remove_keys(JOB_KEYS)


def safe_url(url: str) -> str:
    """The URL without userinfo, query string or fragment (signatures and tokens live there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_SECRET_RES = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bsk_[A-Za-z0-9_]{4,}"),
    re.compile(r"(?i)(x-amz-(?:signature|security-token|credential)=)[^&\s\"']+"),
    re.compile(r"(?i)(\"?(?:api_?key|apikey|secret|password|authorization)\"?\s*[:=]\s*\"?)[^\s\",}]+"),
)


def redact(text: str, max_chars: int = 2000) -> str:
    """Mask URLs' query strings, bearer tokens and API keys in free text, then trim it."""
    cleaned = _URL_RE.sub(lambda match: safe_url(match.group(0)), text)
    for pattern in _SECRET_RES:
        cleaned = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", cleaned)
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 1] + "…"
    return cleaned


class RedactingFilter(logging.Filter):
    """Safety net: mask URLs' query strings and keys in every message this logger emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.getMessage(), max_chars=4000)
            record.args = ()
        return True


logger.addFilter(RedactingFilter())
