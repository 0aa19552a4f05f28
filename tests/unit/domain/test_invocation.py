from __future__ import annotations

import math
from dataclasses import dataclass

from imagejobs.invocation import remaining_seconds, time_left_clock
from imagejobs.sqs_retry import DEFAULT_LEASE_SECONDS, LEASE_MARGIN_SECONDS, lease_seconds


@dataclass
class Context:
    millis: int

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


class BrokenClock:
    def get_remaining_time_in_millis(self) -> int:
        raise TypeError("a stand-in context without a clock")


def test_the_remaining_time_is_read_in_seconds() -> None:
    assert remaining_seconds(Context(1_500)) == 1.5


def test_no_context_or_an_unusable_one_says_nothing() -> None:
    assert remaining_seconds(None) is None
    assert remaining_seconds(BrokenClock()) is None


def test_the_time_left_clock_reads_the_context_at_each_call_and_is_unbounded_without_one() -> None:
    context = Context(2_000)
    time_left = time_left_clock(context)
    assert time_left() == 2.0
    context.millis = 500
    assert time_left() == 0.5
    assert time_left_clock(None)() == math.inf
    assert time_left_clock(BrokenClock())() == math.inf


def test_a_claim_outlives_the_invocation_by_the_margin() -> None:
    assert lease_seconds(Context(60_000)) == 60.0 + LEASE_MARGIN_SECONDS
    assert lease_seconds(None) == DEFAULT_LEASE_SECONDS
