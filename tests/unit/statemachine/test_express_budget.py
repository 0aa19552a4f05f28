"""EXPRESS stops an execution at 5 minutes: whatever may still run after the hand-over time must fit.

The last Poll of an execution starts at most one poll interval after `HandoverAfterSeconds` (a poll
that ended just before it said "not due yet"). From there, the longest path of Tasks to the end of the
execution (the outputs stored and, should that fail, the pipeline error recorded; or the hand-over and
its error) must end before 300 s. Each Task's worst case is computed from the ASL: every retry's
delay (IntervalSeconds x BackoffRate^n, capped by MaxDelaySeconds; FULL jitter only shortens it) plus
ATTEMPT_SECONDS for each attempt's own run. The attempts' run time is an allowance, not a bound: a
hung attempt is bounded only by its function's Timeout, which the ASL does not see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagejobs_tools.local.template import load_sam_template

from .conftest import ASL_PATH

EXPRESS_LIMIT_SECONDS = 300
# One attempt's own run (a poll GET, a record write, a copy of an image) on AWS: ~0.1-1 s measured.
ATTEMPT_SECONDS = 2.0
TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"
# Before the fix: Finalize's three tasks retried 10 times, backoff capped at 60 s.
FINALIZE_BEFORE = {"IntervalSeconds": 2, "BackoffRate": 2, "MaxAttempts": 10, "MaxDelaySeconds": 60}


def retry_delays(retrier: dict[str, Any]) -> list[float]:
    """The delay before each retry of one retrier, at its longest."""
    interval = float(retrier.get("IntervalSeconds", 1))
    rate = float(retrier.get("BackoffRate", 2.0))
    cap = retrier.get("MaxDelaySeconds")
    delays = [interval * rate**n for n in range(int(retrier.get("MaxAttempts", 3)))]
    return [min(d, float(cap)) if cap is not None else d for d in delays]


def task_worst_case(state: dict[str, Any]) -> float:
    """A Task's longest time: every retrier's retries (each counts its own) and every attempt."""
    retriers = state.get("Retry", [])
    delays = [d for retrier in retriers for d in retry_delays(retrier)]
    return sum(delays) + (1 + len(delays)) * ATTEMPT_SECONDS


def _next_states(state: dict[str, Any]) -> set[str]:
    found = {state[key] for key in ("Next", "Default") if key in state}
    found |= {choice["Next"] for choice in state.get("Choices", [])}
    return found | {catcher["Next"] for catcher in state.get("Catch", [])}


def longest_path(states: dict[str, Any], start: str, stop: set[str]) -> tuple[float, list[str]]:
    """The longest time from `start` to the end of the execution; a state in `stop` (the loop's
    Wait, where the next round begins) ends a path too."""
    state = states[start]
    own = task_worst_case(state) if state["Type"] == "Task" else 0.0
    best: tuple[float, list[str]] = (0.0, [])
    for name in _next_states(state) - stop:
        best = max(best, longest_path(states, name, stop))
    return own + best[0], [start, *best[1]]


def _definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASL_PATH.read_text(encoding="utf-8"))
    return loaded


def _express_handover_and_interval() -> tuple[int, int]:
    """HANDOVER_AFTER_SECONDS' `auto` value on EXPRESS and the default poll interval, from the template."""
    template = load_sam_template(TEMPLATE)
    variable = template["Resources"]["IntakeFunction"]["Properties"]["Environment"]["Variables"]
    [_, on_auto, _] = variable["HANDOVER_AFTER_SECONDS"]["Fn::If"]
    [condition, express, _] = on_auto["Fn::If"]
    assert condition == "IsExpressWorkflow"
    return int(express), int(template["Parameters"]["PollIntervalSeconds"]["Default"])


def test_every_task_after_the_handover_point_fits_in_expresss_five_minutes() -> None:
    states = _definition()["States"]
    handover, interval = _express_handover_and_interval()
    # The refund rechecks' loop (WaitForRefund) is never entered by an execution that hands over
    # (RefundPending's condition; test_job_state_machine.py proves it): EXPRESS executions end before.
    worst, path = longest_path(states, "Poll", stop={"WaitBeforePoll", "WaitForRefund"})
    end = handover + interval + worst
    assert end <= EXPRESS_LIMIT_SECONDS, f"{end:.0f} s along {' > '.join(path)}"


def test_each_tasks_own_budget_fits_after_the_handover_point() -> None:
    handover, interval = _express_handover_and_interval()
    for name, state in _definition()["States"].items():
        if state["Type"] == "Task":
            assert handover + interval + task_worst_case(state) <= EXPRESS_LIMIT_SECONDS, name


def test_the_budget_arithmetic_gives_the_issues_figure_for_the_old_finalize_retry() -> None:
    # 2+4+8+16+32+60*5 = 362 s of delays, plus 11 attempts.
    assert sum(retry_delays(FINALIZE_BEFORE)) == 362
    state = {"Type": "Task", "Retry": [FINALIZE_BEFORE]}
    assert task_worst_case(state) == 362 + 11 * ATTEMPT_SECONDS
