"""Powertools Logger/Metrics/Tracer shared by every function, plus redaction helpers.

Secrets never reach logs: URLs are logged without their query string (presigned
signatures live there) and bearer tokens / API keys are masked in free text.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
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


class LazyTracer:
    """Powertools Tracer, built on first use rather than at import.

    Building a Tracer imports the X-Ray SDK, whose recorder creates two botocore
    clients for its sampler (~100-250 ms, over half of every handler's import time);
    deferring it keeps module import (and the local stack, tests, tooling that only
    import handlers) fast. Decorators wrap now and delegate on the first call.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    self._tracer = Tracer(service=self.service)
        return self._tracer

    def _lazy(self, decorate: str, function: F, options: dict[str, Any]) -> F:
        decorated: Callable[..., Any] | None = None

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal decorated
            if decorated is None:
                decorated = getattr(self.tracer, decorate)(function, **options)
            return decorated(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def capture_lambda_handler(self, handler: F | None = None, **options: Any) -> Any:
        if handler is None:
            return functools.partial(self.capture_lambda_handler, **options)
        return self._lazy("capture_lambda_handler", handler, options)

    def capture_method(self, method: F | None = None, **options: Any) -> Any:
        if method is None:
            return functools.partial(self.capture_method, **options)
        return self._lazy("capture_method", method, options)

    def __getattr__(self, name: str) -> Any:  # put_annotation, provider, ...
        return getattr(self.tracer, name)


tracer = LazyTracer(SERVICE)

# Metric names (namespace ImageJobs).
JOBS_SUBMITTED = "JobsSubmitted"
JOBS_REJECTED = "JobsRejected"
JOBS_COMPLETED = "JobsCompleted"
JOBS_FAILED = "JobsFailed"
JOBS_TIMED_OUT = "JobsTimedOut"
SUBMIT_UNKNOWN = "SubmitUnknown"
CREDITS_USED = "CreditsUsed"
CREDITS_REFUNDED = "CreditsRefunded"
JOB_LATENCY_SECONDS = "JobLatencySeconds"
DETECTION_DELAY_SECONDS = "DetectionDelaySeconds"


def count(name: str, value: float = 1) -> None:
    _add(name, MetricUnit.Count, value)


def seconds(name: str, value: float) -> None:
    _add(name, MetricUnit.Seconds, max(0.0, value))


def _add(name: str, unit: MetricUnit, value: float) -> None:
    # With POWERTOOLS_METRICS_DISABLED, Powertools 3.x skips the flush but not the collection: the
    # set is never cleared, so values pile up across invocations and add_metric prints them (EMF,
    # i.e. published) once one metric reaches 100 values. Disabled means not collected at all.
    if is_metrics_disabled():
        return
    metrics.add_metric(name=name, unit=unit, value=value)


# Keys that describe the job being handled; thread-local, so concurrent invocations in one process
# (the local stack's threads) each log their own job, and one job's keys never outlive it.
JOB_KEYS = ("correlation_id", "job_id", "task_id", "model", "kind")


def bind_job(job_id: str, **keys: object) -> None:
    """Make the job id the correlation id of every following log line (this thread), with
    `keys` (task_id, model, kind); keys of an earlier job are dropped first."""
    current = logger.thread_safe_get_current_keys()
    merged: dict[str, object] = {}
    if current.get("job_id") == job_id:  # the same job again: keep what it already said
        merged.update({key: current[key] for key in ("task_id", "model", "kind") if key in current})
    merged.update(keys)
    logger.thread_safe_remove_keys(JOB_KEYS)
    logger.thread_safe_append_keys(correlation_id=job_id, job_id=job_id, **merged)


def unbind_job() -> None:
    logger.thread_safe_remove_keys(JOB_KEYS)


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
