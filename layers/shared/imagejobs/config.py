"""Function configuration: one environment model per handler, composed from shared field groups.

Each field names the environment variable it is read from (``variable(...)``), so a handler's
model is exactly the set of variables that handler reads; its ``from_env`` runs at module import,
so a missing or invalid variable fails the function's init, naming the variable
(docs/architecture.md, "Function environment").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self, TypeVar

T = TypeVar("T")
SQS_MAX_DELAY_SECONDS = 900  # SQS's DelaySeconds limit


class ConfigError(ValueError):
    """A required environment variable is missing or has an invalid value."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"environment variable {variable}: {reason}")
        self.variable = variable
        self.reason = reason


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is required but missing or empty")
    return value


def _http_url(environ: Mapping[str, str], name: str) -> str:
    url = _required(environ, name).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(name, f"must be an http(s) URL, got {url!r}")
    return url


def _number(
    environ: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], minimum: float
) -> T:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if float(value) < minimum:  # type: ignore[arg-type]
        raise ConfigError(name, f"must be >= {minimum}, got {raw!r}")
    return value


def _allow_hosts(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    hosts: list[str] = []
    for item in environ.get(name, "").split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(name, f"entries must be host:port, got {item.strip()!r}")
        hosts.append(entry)
    return tuple(hosts)


# Step Functions stops an EXPRESS execution at 300 s; a hand-over must start before that.
EXPRESS_LIMIT_SECONDS = 300.0


def _handover_after(environ: Mapping[str, str], name: str) -> float:
    value = _number(environ, name, 0.0, float, 0)
    if not math.isfinite(value) or value >= EXPRESS_LIMIT_SECONDS:
        raise ConfigError(
            name,
            f"must be below {EXPRESS_LIMIT_SECONDS:g} (the EXPRESS execution limit) or 0 to turn "
            f"hand-overs off, got {environ.get(name, '').strip()!r}",
        )
    return value


# FirstPollAfter: "auto" (estimated per model from recent jobs), or whole seconds up to 240 so that
# an EXPRESS execution still polls (and can hand over) well inside its 300 s.
FIRST_POLL_AUTO = "auto"
FIRST_POLL_MAX_SECONDS = 240


def _first_poll_after(environ: Mapping[str, str], name: str) -> int | str:
    raw = environ.get(name, "").strip()
    if raw == FIRST_POLL_AUTO:
        return FIRST_POLL_AUTO
    if raw and not (raw.isdigit() and int(raw) <= FIRST_POLL_MAX_SECONDS):
        raise ConfigError(
            name, f"must be auto or whole seconds from 0 to {FIRST_POLL_MAX_SECONDS}, got {raw!r}"
        )
    return int(raw) if raw else 0


# PollsPerInvocation: one PollFunction call polls up to this many times, 2 s apart (its Timeout
# bounds it too); more would hold a Lambda instance per job for minutes.
POLLS_PER_INVOCATION_MAX = 30


def _polls_per_invocation(environ: Mapping[str, str], name: str) -> int:
    value = _number(environ, name, 1, int, 1)
    if value > POLLS_PER_INVOCATION_MAX:
        raise ConfigError(name, f"must be from 1 to {POLLS_PER_INVOCATION_MAX}, got {value}")
    return value


def _prefix(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip() or default
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(name, f"must be a relative key prefix without '..', got {value!r}")
    return value if value.endswith("/") else value + "/"


def _refuse_overlaps(triggers: Mapping[str, str], others: Mapping[str, str]) -> None:
    """No recursion: nothing written or read as configuration may lie under (or over) a prefix
    whose uploads start work. Names the overlapping variable of ``others``."""
    for trigger, trigger_value in triggers.items():
        for other, value in others.items():
            if other != trigger and (value.startswith(trigger_value) or trigger_value.startswith(value)):
                raise ConfigError(
                    other, f"{value!r} overlaps {trigger} {trigger_value!r} (uploads there start jobs)"
                )


_SOURCE = "imagejobs.environment"


@dataclass(frozen=True)
class _Source:
    name: str
    read: Callable[..., Any]
    options: tuple[Any, ...]


def variable(name: str, read: Callable[..., Any], *options: Any) -> dict[str, _Source]:
    """Field metadata: the field's value is ``read(environ, name, *options)``."""
    return {_SOURCE: _Source(name, read, options)}


@dataclass(frozen=True, kw_only=True)
class EnvironmentSettings:
    """Root of every field group and handler model: reads each field from its variable."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        values = {}
        for each in fields(cls):
            source: _Source = each.metadata[_SOURCE]
            values[each.name] = source.read(env, source.name, *source.options)
        return cls(**values)

    def __post_init__(self) -> None:
        """Cross-field checks: each group's ``__post_init__`` checks its own fields, then calls super()."""


# ----------------------------------------------------------------------------- field groups


@dataclass(frozen=True, kw_only=True)
class JobRecordsSettings(EnvironmentSettings):
    jobs_table: str = field(metadata=variable("JOBS_TABLE", _required))


@dataclass(frozen=True, kw_only=True)
class ProviderSettings(EnvironmentSettings):
    provider_base_url: str = field(metadata=variable("PROVIDER_BASE_URL", _http_url))
    # A Secrets Manager name or ARN: the key itself never sits in the environment.
    provider_api_key_secret: str = field(metadata=variable("PROVIDER_API_KEY_SECRET", _required))


@dataclass(frozen=True, kw_only=True)
class OutputBucketSettings(EnvironmentSettings):
    # The stack's bucket: outputs, uploads, and the only bucket s3:// input images may name.
    output_bucket: str = field(metadata=variable("OUTPUT_BUCKET", _required))


@dataclass(frozen=True, kw_only=True)
class UrlPolicySettings(EnvironmentSettings):
    # host:port entries exempt from the https / public-address URL checks (the local stack only).
    url_allow_hosts: tuple[str, ...] = field(metadata=variable("URL_ALLOW_HOSTS", _allow_hosts))


@dataclass(frozen=True, kw_only=True)
class JobInputSettings(OutputBucketSettings, UrlPolicySettings):
    """What ``jobs.parse_job`` checks a job's input URLs against."""


@dataclass(frozen=True, kw_only=True)
class JobsQueueSettings(EnvironmentSettings):
    jobs_queue_url: str = field(metadata=variable("JOBS_QUEUE_URL", _required))


@dataclass(frozen=True, kw_only=True)
class ExecutionSettings(EnvironmentSettings):
    """The wait-loop a submitted job starts (statemachine/job.asl.json) and its execution input."""

    state_machine_arn: str = field(metadata=variable("STATE_MACHINE_ARN", _required))
    poll_interval_seconds: int = field(metadata=variable("POLL_INTERVAL_SECONDS", _number, 2, int, 0))
    max_wait_image_seconds: int = field(metadata=variable("MAX_WAIT_IMAGE_SECONDS", _number, 600, int, 1))
    max_wait_video_seconds: int = field(metadata=variable("MAX_WAIT_VIDEO_SECONDS", _number, 1800, int, 1))
    # EXPRESS executions stop at 5 minutes: a job's execution hands over to a fresh one after this
    # many seconds (statemachine/job.asl.json, HandOver). 0 = never (STANDARD).
    handover_after_seconds: float = field(metadata=variable("HANDOVER_AFTER_SECONDS", _handover_after))
    # When a job's first poll happens: 0 = after one poll interval (as every later poll), N seconds,
    # or "auto" (imagejobs.first_poll).
    first_poll_after: int | str = field(metadata=variable("FIRST_POLL_AFTER", _first_poll_after))

    def max_wait_seconds(self, kind: str) -> int:
        return self.max_wait_video_seconds if kind == "video" else self.max_wait_image_seconds

    def __post_init__(self) -> None:
        super().__post_init__()
        # An EXPRESS execution must poll (and so can hand over) before its hand-over time: the retry
        # budgets after the last poll fit the 300 s only from there (test_express_budget.py).
        first = self.first_poll_after
        if self.handover_after_seconds > 0 and isinstance(first, int) and first > self.handover_after_seconds:
            raise ConfigError(
                "FIRST_POLL_AFTER",
                f"must not exceed HANDOVER_AFTER_SECONDS ({self.handover_after_seconds:g}): an execution "
                f"must poll before it hands over, got {first}",
            )


@dataclass(frozen=True, kw_only=True)
class TriggerPrefixSettings(EnvironmentSettings):
    """The prefixes whose uploads start work (docs/uploads.md); they must not overlap each other."""

    inputs_prefix: str = field(metadata=variable("INPUTS_PREFIX", _prefix, "inputs/"))
    batches_prefix: str = field(metadata=variable("BATCHES_PREFIX", _prefix, "batches/"))

    def trigger_prefixes(self) -> dict[str, str]:
        return {"INPUTS_PREFIX": self.inputs_prefix, "BATCHES_PREFIX": self.batches_prefix}

    def __post_init__(self) -> None:
        super().__post_init__()
        _refuse_overlaps(self.trigger_prefixes(), self.trigger_prefixes())


# ----------------------------------------------------------------------------- one model per handler


@dataclass(frozen=True, kw_only=True)
class IntakeSettings(
    JobRecordsSettings, ProviderSettings, JobInputSettings, JobsQueueSettings, ExecutionSettings
):
    """IntakeFunction: validate, record, submit once, start the wait-loop."""

    presign_ttl_seconds: int = field(metadata=variable("PRESIGN_TTL_SECONDS", _number, 3600, int, 1))
    # JobsQueue's redrive maxReceiveCount (template parameter JobsMaxReceiveCount): the receive
    # after which a failed job message goes to the DLQ. 0 = unknown (nothing noted on the record).
    jobs_max_receive_count: int = field(metadata=variable("JOBS_MAX_RECEIVE_COUNT", _number, 0, int, 0))
    # Credits the jobs may reserve per UTC day (docs/control.md); 0 = no limit, no accounting.
    credit_budget_per_day: int = field(metadata=variable("CREDIT_BUDGET_PER_DAY", _number, 0, int, 0))
    # Credits the jobs of one batch may reserve in all (docs/control.md); 0 = no batch budget.
    credit_budget_per_batch: int = field(metadata=variable("CREDIT_BUDGET_PER_BATCH", _number, 0, int, 0))
    # How soon a job waiting for budget looks again (SQS's DelaySeconds caps it at 900).
    budget_recheck_seconds: int = field(metadata=variable("BUDGET_RECHECK_SECONDS", _number, 300, int, 1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget_recheck_seconds > SQS_MAX_DELAY_SECONDS:
            raise ConfigError(
                "BUDGET_RECHECK_SECONDS", f"must be <= {SQS_MAX_DELAY_SECONDS} (SQS DelaySeconds)"
            )


@dataclass(frozen=True, kw_only=True)
class PollSettings(ProviderSettings):
    """PollFunction: only talks to the provider (the job's state travels in the execution)."""

    polls_per_invocation: int = field(metadata=variable("POLLS_PER_INVOCATION", _polls_per_invocation))


@dataclass(frozen=True, kw_only=True)
class StoreOutputsSettings(
    JobRecordsSettings, OutputBucketSettings, UrlPolicySettings, TriggerPrefixSettings
):
    """StoreOutputsFunction: streams outputs into the bucket, never under a prefix whose uploads
    start work (it reads the trigger prefixes only to refuse such an OUTPUT_PREFIX)."""

    output_prefix: str = field(metadata=variable("OUTPUT_PREFIX", _prefix, "outputs/"))
    max_output_bytes: int = field(metadata=variable("MAX_OUTPUT_BYTES", _number, 512 * 1024 * 1024, int, 1))

    def __post_init__(self) -> None:
        super().__post_init__()
        _refuse_overlaps(self.trigger_prefixes(), {"OUTPUT_PREFIX": self.output_prefix})


@dataclass(frozen=True, kw_only=True)
class WebhookQueueSettings(EnvironmentSettings):
    webhook_queue_url: str = field(metadata=variable("WEBHOOK_QUEUE_URL", _required))


@dataclass(frozen=True, kw_only=True)
class JobEventsSettings(WebhookQueueSettings, JobRecordsSettings):
    """JobEventsFunction: the records' state changes, published on one EventBridge bus, and
    queued for the jobs' webhooks; batches' jobs counted, complete batches queued for results."""

    event_bus_name: str = field(metadata=variable("EVENT_BUS_NAME", _required))
    batch_results_queue_url: str = field(metadata=variable("BATCH_RESULTS_QUEUE_URL", _required))


@dataclass(frozen=True, kw_only=True)
class BatchResultsSettings(JobRecordsSettings):
    """BatchResultsFunction: writes a complete batch's results and summary (the bucket and keys
    are on the batch item)."""


def _delays(environ: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    items = [item.strip() for item in raw.split(",")]
    if not all(item.isdigit() and int(item) <= MAX_RETRY_DELAY_SECONDS for item in items):
        raise ConfigError(
            name, f"must be comma-separated whole seconds, each at most {MAX_RETRY_DELAY_SECONDS}: {raw!r}"
        )
    return tuple(int(item) for item in items)


# SQS holds a message back at most 12 hours (ChangeMessageVisibility's limit).
MAX_RETRY_DELAY_SECONDS = 43_200
# Standard Webhooks' schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (about 27.6 h in all, so a receiver down for a day still gets every delivery).
STANDARD_WEBHOOK_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)


# A failed task's refund may show on a later snapshot ("refunded (or will be shortly)"): seconds
# before each re-read (template parameter RefundRecheckDelays; 100 s, three GETs at most).
DEFAULT_REFUND_RECHECK_DELAYS = (10, 30, 60)


@dataclass(frozen=True, kw_only=True)
class FinalizeSettings(JobRecordsSettings):
    """FinalizeFunction: records a terminal FAILED / TIMED_OUT job, and a refund seen later."""

    refund_recheck_delays: tuple[int, ...] = field(
        metadata=variable("REFUND_RECHECK_DELAYS", _delays, DEFAULT_REFUND_RECHECK_DELAYS)
    )


@dataclass(frozen=True, kw_only=True)
class WebhookSettings(WebhookQueueSettings, UrlPolicySettings):
    """WebhookFunction: signs and POSTs queued deliveries, retrying on the delay schedule."""

    webhook_dead_letter_queue_url: str = field(metadata=variable("WEBHOOK_DEAD_LETTER_QUEUE_URL", _required))
    # A Secrets Manager name or ARN: the signing secret itself never sits in the environment.
    webhook_signing_secret: str = field(metadata=variable("WEBHOOK_SIGNING_SECRET", _required))
    # Seconds before each retry; len + 1 attempts in all (template parameter WebhookRetryDelays).
    retry_delays: tuple[int, ...] = field(
        metadata=variable("WEBHOOK_RETRY_DELAYS", _delays, STANDARD_WEBHOOK_DELAYS)
    )


@dataclass(frozen=True, kw_only=True)
class S3IntakeSettings(JobRecordsSettings, JobInputSettings, JobsQueueSettings, TriggerPrefixSettings):
    """S3IntakeFunction: uploads under the trigger prefixes become jobs on the jobs queue."""

    # Named recipes are read as configuration: an upload must never be able to start work there.
    recipes_prefix: str = field(metadata=variable("RECIPES_PREFIX", _prefix, "recipes/"))
    max_upload_bytes: int = field(metadata=variable("MAX_UPLOAD_BYTES", _number, 50 * 1024 * 1024, int, 1))
    # The queue its S3 events arrive on: a batch paused for time is sent there again, and a failed
    # event's retry is brought forward (the queue's own visibility timeout is 90 minutes).
    uploads_queue_url: str = field(metadata=variable("UPLOADS_QUEUE_URL", _required))

    def __post_init__(self) -> None:
        super().__post_init__()
        _refuse_overlaps(self.trigger_prefixes(), {"RECIPES_PREFIX": self.recipes_prefix})
