"""When a job's first poll happens: the template parameter ``FirstPollAfter`` (docs/polling.md).

Every poll before a task can be done costs three state transitions (Wait, Poll, Choice) and a
Lambda call. ``FirstPollAfter`` lets the first Wait last longer, so a job spends none on the part
of its generation time that almost every job of its model needs anyway; from the first poll on,
the job is polled every ``PollIntervalSeconds`` as before.

- ``0`` (default): the first poll comes one poll interval after the submission, as every later one.
- ``N`` seconds: the first poll comes N seconds after the submission.
- ``auto``: the 10th percentile of the provider's own generation time over this model's recent
  COMPLETED jobs (read from the job records, cached per execution environment), never sooner than
  one poll interval nor later than ``AUTO_CAP_SECONDS``; with fewer than ``AUTO_MIN_SAMPLES`` jobs,
  the model catalog's cold-start value. One job in ten of a model finishes before its first poll
  and is detected late, by at most the wait minus its generation time (bench/detection_delay.py
  measures by how much).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from imagejobs.catalog import cold_start_first_poll_seconds
from imagejobs.config import FIRST_POLL_AUTO, ExecutionSettings
from imagejobs.observability import logger

AUTO_QUANTILE = 0.10
AUTO_MIN_SAMPLES = 20
AUTO_RECENT_JOBS = 200  # COMPLETED records read per estimate (one bounded query)
AUTO_CAP_SECONDS = 120
AUTO_REFRESH_SECONDS = 300.0  # an estimate is reused this long by one execution environment
AUTO_COLD_REFRESH_SECONDS = 30.0  # ...and a cold-start one only this long: samples are coming in


class GenerationTimes(Protocol):
    """Where recent generation times come from (``JobStore`` in the pipeline)."""

    def recent_generation_seconds(self, model: str, limit: int) -> list[float]: ...


def lower_quantile(samples: list[float], quantile: float) -> float:
    """Nearest-rank quantile (the value at or below which ``quantile`` of the samples lie)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


@dataclass
class FirstPollPolicy:
    """The first Wait of a job's execution, in whole seconds (Step Functions waits whole seconds)."""

    setting: int | str
    poll_interval_seconds: int
    times: GenerationTimes | None = None
    clock: Callable[[], float] = time.monotonic
    _estimates: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)  # model: (until, s)

    @classmethod
    def from_settings(cls, settings: ExecutionSettings, times: GenerationTimes | None) -> FirstPollPolicy:
        return cls(settings.first_poll_after, settings.poll_interval_seconds, times)

    def seconds(self, model: str, kind: str) -> int:
        if self.setting == FIRST_POLL_AUTO:
            return self._auto(model, kind)
        return int(self.setting) or self.poll_interval_seconds

    def _auto(self, model: str, kind: str) -> int:
        cached = self._estimates.get(model)
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        estimate, learnt = self._estimate(model, kind)
        keep = AUTO_REFRESH_SECONDS if learnt else AUTO_COLD_REFRESH_SECONDS
        self._estimates[model] = (self.clock() + keep, estimate)
        return estimate

    def _estimate(self, model: str, kind: str) -> tuple[int, bool]:
        """(seconds, whether they were learnt from recent jobs rather than the catalog)."""
        samples: list[float] = []
        if self.times is not None:
            try:
                samples = self.times.recent_generation_seconds(model, AUTO_RECENT_JOBS)
            except Exception:  # an estimate is an optimisation: never fail a job for it
                logger.warning("recent generation times unavailable; using the catalog's", exc_info=True)
        learnt = len(samples) >= AUTO_MIN_SAMPLES
        if learnt:
            wait = math.floor(lower_quantile(samples, AUTO_QUANTILE))
        else:
            wait = cold_start_first_poll_seconds(model, kind)
        wait = min(max(wait, self.poll_interval_seconds), AUTO_CAP_SECONDS)
        logger.info(
            "first poll estimate",
            extra={
                "model": model,
                "first_poll_seconds": wait,
                "source": "recent jobs" if learnt else "catalog",
                "samples": len(samples),
            },
        )
        return wait, learnt
