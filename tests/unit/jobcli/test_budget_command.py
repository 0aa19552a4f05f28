"""`imagejobs budget` and the WAITING_FOR_BUDGET display of a job waiting for credit budget."""

from __future__ import annotations

import json

import pytest
from imagejobs import budget

from imagejobs_tools.cli import main
from imagejobs_tools.jobcli.render import budget_lines
from tests.unit.jobcli.conftest import MockStack
from tests.unit.jobcli.support import make_record


def test_budget_shows_the_days_counters(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.put({"jobId": budget.budget_key("2026-01-01"), "reserved": 3, "spent": 12, "committed": 15})

    assert main(["budget", "--day", "2026-01-01", "--json", *stack.resources.target_args()]) == 0

    shown = json.loads(capsys.readouterr().out)
    # --table names the table without the stack's outputs: no limit known.
    assert shown == {
        "day": "2026-01-01", "limit": 0, "spent": 12, "reserved": 3, "committed": 15, "available": None,
    }  # fmt: skip


def test_budget_refuses_a_day_that_is_not_a_date(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["budget", "--day", "yesterday", "--table", "t"])
    assert exited.value.code == 2
    assert "expected a UTC day YYYY-MM-DD, got 'yesterday'" in capsys.readouterr().err


def test_budget_lines_show_what_is_left_of_a_limit() -> None:
    lines = budget_lines(budget.BudgetDay("2026-01-01", 300, reserved=6, spent=90))
    assert [line.split(None, 1) for line in lines[1:]] == [
        ["limit", "300 credits"], ["spent", "90"], ["reserved", "6"], ["available", "204"],
    ]  # fmt: skip


def test_a_job_waiting_for_budget_is_listed_as_such(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make_record("wait-1", "RECEIVED")
    record["budgetWait"] = {"reason": "waiting for credit budget: 3 credits do not fit", "day": "2026-01-01"}
    stack.put(record)

    assert main(["list", *stack.resources.target_args()]) == 0

    [line] = [line for line in capsys.readouterr().out.splitlines() if "wait-1" in line]
    assert "WAITING_FOR_BUDGET" in line and "3 credits do not fit" in line


def test_budget_shows_a_batchs_counters(stack: MockStack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.put({"jobId": budget.batch_budget_key("b-1"), "reserved": 0, "spent": 6, "committed": 6})

    assert main(["budget", "--batch", "b-1", "--json", *stack.resources.target_args()]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "batch": "b-1", "limit": 0, "spent": 6, "reserved": 0, "committed": 6, "available": None,
    }  # fmt: skip

    assert main(["budget", "--batch", "b-1", *stack.resources.target_args()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(None, 2)[2] == "batch b-1"
    assert "CreditBudgetPerBatch = 0" in lines[1]
