"""Simulator settings: what it listens on, its keys and credits, latency, snapshot shape, faults."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Shape = Literal["quickstart", "reference"]
SHAPES: tuple[str, ...] = ("quickstart", "reference")
DEFAULT_API_KEY = "sk_test_local"
DEFAULT_CREDITS = 1000
DEFAULT_FAILURE_CODES: tuple[str, ...] = ("EMPTY_RESULT", "STORAGE_ERROR", "PROVIDER_NSFW_BLOCKED")
RATE_FIELDS: tuple[str, ...] = (
    "submit_500_rate",
    "poll_500_rate",
    "rate_429",
    "task_failure_rate",
    "hang_rate",
    "lost_response_rate",
)


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting."""


@dataclass(frozen=True)
class FaultConfig:
    """Injected faults. Rates are probabilities in [0, 1] drawn from the simulator's seeded RNG."""

    submit_500_rate: float = 0.0  # submission answered 500 before anything is created or charged
    poll_500_rate: float = 0.0  # task poll answered 500
    rate_429: float = 0.0  # any /api request answered 429 with Retry-After (nothing charged)
    retry_after: int = 1  # seconds, sent in the Retry-After header
    task_failure_rate: float = 0.0  # accepted task ends failed (status 2), refunded
    failure_codes: tuple[str, ...] = DEFAULT_FAILURE_CODES  # cycled through in order
    hang_rate: float = 0.0  # response delayed by hang_seconds (a submission is created/charged first)
    hang_seconds: float = 30.0
    lost_response_rate: float = 0.0  # submission created and charged, then the connection is dropped
    slow_output_bytes_per_second: int = 0  # 0 = output files served at full speed

    def validated(self) -> FaultConfig:
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a number between 0 and 1, got {value!r}")
        if (
            not isinstance(self.retry_after, int)
            or isinstance(self.retry_after, bool)
            or self.retry_after < 0
        ):
            raise ConfigError(f"retry_after must be a non-negative integer, got {self.retry_after!r}")
        if not _is_number(self.hang_seconds) or not 0 <= self.hang_seconds <= 3600:
            raise ConfigError(f"hang_seconds must be a number between 0 and 3600, got {self.hang_seconds!r}")
        bps = self.slow_output_bytes_per_second
        if not isinstance(bps, int) or isinstance(bps, bool) or bps < 0:
            raise ConfigError(f"slow_output_bytes_per_second must be a non-negative integer, got {bps!r}")
        codes = self.failure_codes
        if not isinstance(codes, tuple) or not codes or not all(isinstance(c, str) and c for c in codes):
            raise ConfigError("failure_codes must be a non-empty list of error codes")
        return self

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied; unknown names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f"unknown fault setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(changes)
        if "failure_codes" in values and isinstance(values["failure_codes"], list | tuple):
            values["failure_codes"] = tuple(values["failure_codes"])
        return dataclasses.replace(self, **values).validated()

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failure_codes"] = list(self.failure_codes)
        return data


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    # key -> starting credits; a plain sequence of keys gets `credits` each
    api_keys: Mapping[str, int] | Sequence[str] | None = None
    credits: int = DEFAULT_CREDITS
    latency: tuple[float, float] = (2.0, 5.0)  # image tasks: seconds pending, uniform in [min, max]
    video_latency: tuple[float, float] | None = None  # video tasks; None = 3x latency
    shape: Shape = "quickstart"
    seed: int | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    output_format: Literal["png", "jpeg"] = "png"
    public_base_url: str | None = None  # base of output URLs; default the listening URL
    max_body_bytes: int = 1024 * 1024
    fetch_timeout: float = 5.0  # image-to-image input download timeout, seconds
    max_input_bytes: int = 50 * 1024 * 1024
    log_requests: bool = False  # one line per request on stderr (never headers, so never keys)

    def initial_credits(self) -> dict[str, int]:
        if self.api_keys is None:
            return {DEFAULT_API_KEY: self.credits}
        if isinstance(self.api_keys, Mapping):
            return dict(self.api_keys)
        return {key: self.credits for key in self.api_keys}

    def image_latency(self) -> tuple[float, float]:
        return self.latency

    def video_latency_range(self) -> tuple[float, float]:
        if self.video_latency is not None:
            return self.video_latency
        return (self.latency[0] * 3, self.latency[1] * 3)

    def validated(self) -> SimulatorConfig:
        if self.shape not in SHAPES:
            raise ConfigError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        for name, bounds in (("latency", self.latency), ("video_latency", self.video_latency)):
            if bounds is not None:
                validate_latency(name, bounds)
        for key, credits in self.initial_credits().items():
            validate_key(key)
            if not isinstance(credits, int) or credits < 0:
                raise ConfigError(f"credits for a key must be a non-negative integer, got {credits!r}")
        if self.output_format not in ("png", "jpeg"):
            raise ConfigError(f"output_format must be png or jpeg, got {self.output_format!r}")
        self.faults.validated()
        return self


def validate_latency(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    if len(bounds) != 2 or not all(_is_number(b) for b in bounds):
        raise ConfigError(f"{name} must be two numbers MIN, MAX, got {bounds!r}")
    low, high = float(bounds[0]), float(bounds[1])
    if not 0 <= low <= high:
        raise ConfigError(f"{name} must satisfy 0 <= MIN <= MAX, got {low}:{high}")
    return low, high


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > 256 or not key.isprintable() or " " in key:
        raise ConfigError("an API key must be 1-256 printable characters without spaces")
    return key


def parse_latency(text: str) -> tuple[float, float]:
    """``MIN:MAX`` (or a single number) seconds."""
    parts = text.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"latency must be MIN:MAX seconds, got {text!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    return validate_latency("latency", numbers)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
