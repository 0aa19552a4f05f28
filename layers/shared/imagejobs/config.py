"""Function configuration: every environment variable the handlers read (docs/architecture.md)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


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


def _prefix(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip() or default
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(name, f"must be a relative key prefix without '..', got {value!r}")
    return value if value.endswith("/") else value + "/"


@dataclass(frozen=True)
class Settings:
    jobs_table: str
    output_bucket: str
    state_machine_arn: str
    provider_base_url: str
    provider_api_key_secret: str
    poll_interval_seconds: int = 2
    max_wait_image_seconds: int = 600
    max_wait_video_seconds: int = 1800
    output_prefix: str = "outputs/"
    max_output_bytes: int = 512 * 1024 * 1024
    url_allow_hosts: tuple[str, ...] = ()
    presign_ttl_seconds: int = 3600
    # EXPRESS executions stop at 5 minutes: a job's execution hands over to a fresh one after this
    # many seconds (statemachine/job.asl.json, HandOver). 0 = never (STANDARD).
    handover_after_seconds: float = 0.0
    # S3 upload triggers (docs/uploads.md); only S3IntakeFunction needs JOBS_QUEUE_URL.
    inputs_prefix: str = "inputs/"
    batches_prefix: str = "batches/"
    recipes_prefix: str = "recipes/"
    max_upload_bytes: int = 50 * 1024 * 1024
    jobs_queue_url: str = ""
    # JobsQueue's redrive maxReceiveCount (template parameter JobsMaxReceiveCount): the receive
    # after which a failed job message goes to the DLQ. 0 = unknown (nothing noted on the record).
    jobs_max_receive_count: int = 0
    service_name: str = "imagejobs"
    metrics_namespace: str = "ImageJobs"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        base_url = _required(env, "PROVIDER_BASE_URL").rstrip("/")
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError("PROVIDER_BASE_URL", f"must be an http(s) URL, got {base_url!r}")
        log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(
                "LOG_LEVEL", f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}"
            )
        return cls(
            jobs_table=_required(env, "JOBS_TABLE"),
            output_bucket=_required(env, "OUTPUT_BUCKET"),
            state_machine_arn=_required(env, "STATE_MACHINE_ARN"),
            provider_base_url=base_url,
            provider_api_key_secret=_required(env, "PROVIDER_API_KEY_SECRET"),
            poll_interval_seconds=_number(env, "POLL_INTERVAL_SECONDS", 2, int, 0),
            max_wait_image_seconds=_number(env, "MAX_WAIT_IMAGE_SECONDS", 600, int, 1),
            max_wait_video_seconds=_number(env, "MAX_WAIT_VIDEO_SECONDS", 1800, int, 1),
            output_prefix=_prefix(env, "OUTPUT_PREFIX", "outputs/"),
            max_output_bytes=_number(env, "MAX_OUTPUT_BYTES", 512 * 1024 * 1024, int, 1),
            url_allow_hosts=_allow_hosts(env, "URL_ALLOW_HOSTS"),
            presign_ttl_seconds=_number(env, "PRESIGN_TTL_SECONDS", 3600, int, 1),
            handover_after_seconds=_handover_after(env, "HANDOVER_AFTER_SECONDS"),
            inputs_prefix=_prefix(env, "INPUTS_PREFIX", "inputs/"),
            batches_prefix=_prefix(env, "BATCHES_PREFIX", "batches/"),
            recipes_prefix=_prefix(env, "RECIPES_PREFIX", "recipes/"),
            max_upload_bytes=_number(env, "MAX_UPLOAD_BYTES", 50 * 1024 * 1024, int, 1),
            jobs_queue_url=env.get("JOBS_QUEUE_URL", "").strip(),
            jobs_max_receive_count=_number(env, "JOBS_MAX_RECEIVE_COUNT", 0, int, 0),
            service_name=env.get("POWERTOOLS_SERVICE_NAME", "").strip() or "imagejobs",
            metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or "ImageJobs",
            log_level=log_level,
        )

    def __post_init__(self) -> None:
        # No recursion: outputs (and the prefixes read as configuration) must never lie under a
        # prefix whose uploads start work, nor may the two trigger prefixes overlap.
        named = {
            "OUTPUT_PREFIX": self.output_prefix,
            "INPUTS_PREFIX": self.inputs_prefix,
            "BATCHES_PREFIX": self.batches_prefix,
            "RECIPES_PREFIX": self.recipes_prefix,
        }
        for trigger in ("INPUTS_PREFIX", "BATCHES_PREFIX"):
            for other, value in named.items():
                if (
                    other != trigger
                    and value
                    and (value.startswith(named[trigger]) or named[trigger].startswith(value))
                ):
                    raise ConfigError(
                        other, f"{value!r} overlaps {trigger} {named[trigger]!r} (uploads there start jobs)"
                    )

    def max_wait_seconds(self, kind: str) -> int:
        return self.max_wait_video_seconds if kind == "video" else self.max_wait_image_seconds
