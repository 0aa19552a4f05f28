"""What a handler may ask of its Lambda context: the time left in this invocation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol


class InvocationContext(Protocol):
    """The part of Lambda's context object the domain reads (Powertools' LambdaContext has it)."""

    def get_remaining_time_in_millis(self) -> int: ...


def remaining_seconds(context: InvocationContext | None) -> float | None:
    """The invocation's remaining time; None when there is no context to say (a direct call)."""
    if context is None:
        return None
    try:
        return float(context.get_remaining_time_in_millis()) / 1000.0
    except (AttributeError, TypeError, ValueError):  # a stand-in context without a usable clock
        return None


def time_left_clock(context: InvocationContext | None) -> Callable[[], float]:
    """Seconds left in the invocation, read at each call; infinite when there is no context to say."""

    def time_left() -> float:
        remaining = remaining_seconds(context)
        return math.inf if remaining is None else remaining

    return time_left
