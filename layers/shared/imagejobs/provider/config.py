"""The client's policies as frozen values (as httpx's ``Timeout`` and ``Limits``): how long to wait,
how many connections to keep, and when a failed call is tried again. Built once, shared, printed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagejobs.provider.errors import ProviderError, ProviderServerError, ProviderUnreachable, RateLimited

__all__ = ["Limits", "RetryPolicy", "Timeout"]


@dataclass(frozen=True)
class Timeout:
    """Seconds to open a connection and to wait for each read of the answer."""

    connect: float = 3.05
    read: float = 30.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ValueError("timeouts must be positive")

    def as_requests(self) -> tuple[float, float]:
        return (float(self.connect), float(self.read))


@dataclass(frozen=True)
class Limits:
    """The connection pool. ``fresh_connection_after_idle``: a submission never goes out on a
    connection idle longer than this (None: reuse any), see ``Transport.drop_idle_connections``."""

    pool_size: int = 10
    fresh_connection_after_idle: float | None = 4.0

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call is tried again, and after how long.

    Backoff is exponential with full jitter, capped at ``backoff_cap``; a 429's Retry-After is
    honoured up to ``max_retry_after`` (longer: give up and let the caller's queue retry later);
    no retry starts once ``max_total_seconds`` would be passed.
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 20.0
    max_total_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(
        self, err: ProviderError, attempt: int, *, submission: bool, random: Callable[[], float]
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up now."""
        if attempt >= self.max_attempts or not err.retryable:
            return None
        if submission and not isinstance(err, ProviderUnreachable | RateLimited | ProviderServerError):
            return None  # belt and braces: only "known not processed" failures resend a POST
        if isinstance(err, RateLimited) and err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.max_retry_after else None
        return random() * min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
