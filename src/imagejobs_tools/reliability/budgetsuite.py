"""Suite "budget": N jobs against a daily credit budget of 30 % of them (docs/control.md).

Phase 1: every job is sent at once to a stack whose CreditBudgetPerDay pays for 30 % of them.
Exactly the budget is spent (the budget item and the simulator agree), the rest wait RECEIVED
with `budgetWait`, and none of them reached the provider. Phase 2: the budget is raised (the
intake's environment updated, as a deploy would) and every job completes, none lost, none
submitted twice.
"""

from __future__ import annotations

import math
import time
from typing import Any

import boto3
from imagejobs import budget

from imagejobs_tools.reliability.report import SuiteReport
from imagejobs_tools.reliability.stacksuites import analyse, check_outputs, collect, job_body, running_stack

CREDITS_PER_JOB = 3  # gpt-image-2: the catalog's reservation and the simulator's charge
FUNDED_SHARE = 0.3


def recheck_seconds(size: int) -> int:
    """How often waiting jobs look again: each look is a few calls per waiting message, so a big
    run looks less often (10 s at 1,000 jobs) to keep the local stack's load near the real one."""
    return max(2, min(10, size // 100))


def run_budget(size: int, seed: int = 6) -> SuiteReport:
    report = SuiteReport("budget")
    job_ids = [f"bud-{n:05d}" for n in range(size)]
    funded = math.ceil(size * FUNDED_SHARE)
    limit = funded * CREDITS_PER_JOB
    recheck = recheck_seconds(size)
    started = time.perf_counter()
    parameters = {"CreditBudgetPerDay": str(limit), "BudgetRecheckSeconds": str(recheck)}
    with running_stack(f"sk_test_budget_{seed:04d}_{size}", parameters=parameters) as h:
        h.send([job_body("bud", job_id) for job_id in job_ids])

        def counts() -> dict[str, int]:
            records = h.records()
            statuses = [records.get(j, {}) for j in job_ids]
            return {
                "completed": sum(r.get("status") == "COMPLETED" for r in statuses),
                "waiting": sum(r.get("status") == "RECEIVED" and bool(r.get("budgetWait")) for r in statuses),
            }

        # Each look scans the table: not too often for a big run.
        interval = max(1.0, size / 200)
        held = h.wait(
            lambda: counts() == {"completed": funded, "waiting": size - funded}, 120 + size * 0.5, interval
        )
        phase1 = counts()
        day = budget.day_of(time.time())
        spent = _budget_day(h, day, limit)
        tasks_before_raise = int(h.sim.key_stats(h.api_key)["tasksCreated"])
        report.extra["phase 1 (budget used up)"] = {
            "seconds": round(time.perf_counter() - started, 1),
            **phase1,
            "budget": spent.to_dict(),
            "provider tasks": tasks_before_raise,
        }
        report.check("phase 1: the funded jobs COMPLETED, the rest waiting for budget", held)
        report.check(
            "phase 1: exactly the budget spent (budget item)", (spent.spent, spent.reserved) == (limit, 0)
        )
        report.check(
            "phase 1: the provider charged exactly the budget, for the funded jobs only",
            int(h.sim.key_stats(h.api_key)["spent"]) == limit and tasks_before_raise == funded,
        )

        raised = time.perf_counter()
        h.stack.update_function_environment(
            "IntakeFunction", {"CREDIT_BUDGET_PER_DAY": str(size * CREDITS_PER_JOB)}
        )
        resumed = h.wait(lambda: counts()["completed"] == size, 120 + size * 0.5 + recheck, interval)
        report.extra["phase 2 (budget raised) seconds"] = round(time.perf_counter() - raised, 1)
        ledger = collect(h)
        check_outputs(report, h, ledger)
        final = _budget_day(h, day, size * CREDITS_PER_JOB)
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    report.extra["budget"] = {"limit": limit, "funded jobs": funded, "recheck seconds": recheck}
    report.extra["budget at the end"] = final.to_dict()
    report.check("phase 2: every job COMPLETED after the budget was raised", resumed)
    report.check("records == jobs", all(job in ledger.records for job in job_ids))
    report.check(
        "the budget item's spend = the provider's net charge",
        final.spent == int(ledger.key_stats["net"]) and final.reserved == 0,
    )
    return report


def _budget_day(h: Any, day: str, limit: int) -> budget.BudgetDay:
    dynamodb = boto3.resource(
        "dynamodb", endpoint_url=h.stack.endpoint_url, region_name=h.stack.config.region
    )
    return budget.read_day(dynamodb.Table(h.outputs["JobsTableName"]), day, limit)
