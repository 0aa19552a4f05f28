"""What a handler may ask of its Lambda context: the time left in this invocation."""

from __future__ import annotations

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
