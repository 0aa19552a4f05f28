"""The daily credit budget's rules (imagejobs.budget) as intake, the store and finalize apply them."""

# ruff: noqa: F811  (the tests take test_intake's `env` fixture, imported by its name)

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from imagejobs import budget
from imagejobs.intake import requeue_body
from imagejobs.provider import OutcomeUnknown, ProviderRejected, ProviderServerError
from imagejobs.workflow import finalize_step, refund_recheck_after

from tests.unit.domain.test_intake import Env, env  # noqa: F401  (the fixture, by its name)

DAY = "2026-01-01"  # the Clock's day


def limited(env: Env, limit: int) -> Env:
    return dataclasses.replace(env, settings=dataclasses.replace(env.settings, credit_budget_per_day=limit))


def counters(env: Env, day: str = DAY) -> tuple[int, int]:
    shown = budget.read_day(env.store.table, day, 0)
    return shown.spent, shown.reserved


def job(n: int, **fields: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "prompt": "p", **fields}


def test_jobs_are_submitted_until_the_budget_is_used_then_wait(env: Env) -> None:
    env = limited(env, 9)  # gpt-image-2 reserves 3
    outcomes = [env.handle(job(n)) for n in range(4)]
    assert [o.action for o in outcomes] == ["ack", "ack", "ack", "requeue"]
    assert len(env.provider.submissions) == 3
    assert counters(env) == (9, 0)
    waiting = env.record("job-3")
    assert waiting["status"] == "RECEIVED" and "budget" not in waiting
    assert waiting["budgetWait"]["day"] == DAY and waiting["budgetWait"]["limit"] == 9
    assert "waiting for credit budget" in waiting["budgetWait"]["reason"]
    assert outcomes[3].retry_after_seconds == env.settings.budget_recheck_seconds
    assert json.loads(outcomes[3].requeue_body or "{}") == job(3)


def test_a_reservation_settles_at_the_providers_credits_used(env: Env) -> None:
    env = limited(env, 9)
    env.provider.credits = 2  # reserved 3, charged 2: the difference is free again at once
    actions = [env.handle(job(n)).action for n in range(5)]
    assert actions == ["ack"] * 4 + ["requeue"]  # 8 spent; a fifth would need 3 more
    assert counters(env) == (8, 0)
    assert env.record("job-0")["budget"] == {"day": DAY, "reserved": 3, "state": "settled", "spent": 2}


def test_a_duplicate_delivery_never_reserves_twice(env: Env) -> None:
    env = limited(env, 9)
    env.handle(job(1))
    assert env.handle(job(1), message_id="msg-2").action == "ack"
    assert counters(env) == (3, 0) and len(env.provider.submissions) == 1


@pytest.mark.parametrize(
    ("error", "spent"),
    [(ProviderServerError(500), 0), (ProviderRejected({"prompt": ["bad"]}), 0), (OutcomeUnknown("t"), 3)],
)
def test_an_uncharged_submission_returns_its_reservation_and_an_unknown_one_spends_it(
    env: Env, error: Exception, spent: int
) -> None:
    env = limited(env, 9)
    env.provider.submit_error = error
    env.handle(job(1))
    assert counters(env) == (spent, 0)
    state = env.record("job-1")["budget"]["state"]
    assert state == ("settled" if spent else "released")


def test_a_released_job_reserves_again_when_retried(env: Env) -> None:
    env = limited(env, 3)
    env.provider.submit_error = ProviderServerError(503)
    assert env.handle(job(1)).action == "retry"
    env.provider.submit_error = None
    assert env.handle(job(1)).status == "SUBMITTED"
    assert counters(env) == (3, 0)


def test_a_stale_claim_counts_its_reservation_as_spent(env: Env) -> None:
    env = limited(env, 9)
    env.store.create_received(
        "job-1", {"jobId": "job-1", "kind": "image", "model": "gpt-image-2", "prompt": "p"}
    )
    reservation = budget.Reservation(DAY, 3, 9)
    env.store.claim_for_submit("job-1", 60, reservation=reservation, now=env.clock.now)
    assert counters(env) == (0, 3)
    env.clock.advance(120)  # the worker holding the claim vanished
    assert env.handle(job(1)).status == "SUBMIT_UNKNOWN"
    assert counters(env) == (3, 0)


def test_waiting_jobs_resume_when_the_budget_is_raised_or_the_next_day_starts(env: Env) -> None:
    tight = limited(env, 3)
    tight.handle(job(1))
    assert tight.handle(job(2)).action == "requeue"
    assert limited(env, 6).handle(job(2)).status == "SUBMITTED"
    assert "budgetWait" not in env.record("job-2")
    assert tight.handle(job(3)).action == "requeue"
    env.clock.advance(86_400)
    assert tight.handle(job(3)).status == "SUBMITTED"
    assert counters(env) == (6, 0) and counters(env, "2026-01-02") == (3, 0)


def test_a_job_dearer_than_the_whole_budget_waits(env: Env) -> None:
    env = limited(env, 10)
    outcome = env.handle(job(1, model="nano-banana-pro"))  # reserves 20
    assert outcome.action == "requeue" and env.provider.submissions == []
    assert counters(env) == (0, 0)


def test_no_limit_means_no_accounting(env: Env) -> None:
    env.handle(job(1))
    assert "budget" not in env.record("job-1")
    assert env.store.table.get_item(Key={"jobId": budget.budget_key(DAY)}).get("Item") is None


def batch_limited(env: Env, per_batch: int, per_day: int = 0) -> Env:
    settings = dataclasses.replace(
        env.settings, credit_budget_per_batch=per_batch, credit_budget_per_day=per_day
    )
    return dataclasses.replace(env, settings=settings)


def batch_counters(env: Env, batch_id: str) -> tuple[int, int]:
    shown = budget.read_batch(env.store.table, batch_id, 0)
    return shown.spent, shown.reserved


def line(batch_id: str, n: int, **fields: Any) -> dict[str, Any]:
    return job(n, jobId=f"{batch_id}-{n}", batchId=batch_id, batchLine=n, **fields)


def test_a_batch_budget_stops_that_batch_only(env: Env) -> None:
    env = batch_limited(env, 6)  # two jobs of 3 credits per batch; no daily limit
    outcomes = [env.handle(line("b-1", n)) for n in (1, 2, 3)]
    assert [o.action for o in outcomes] == ["ack", "ack", "requeue"]
    assert env.handle(line("b-2", 1)).status == "SUBMITTED"
    assert env.handle(job(9)).status == "SUBMITTED"  # not in a batch: no batch budget applies
    assert len(env.provider.submissions) == 4
    assert batch_counters(env, "b-1") == (6, 0) and batch_counters(env, "b-2") == (3, 0)
    # The day is counted for the batches' jobs (a reservation is made), never limited.
    assert counters(env) == (9, 0)
    assert "budget" not in env.record("job-9")
    waiting = env.record("b-1-3")["budgetWait"]
    assert waiting["batch"] == "b-1" and waiting["batchLimit"] == 6
    assert (
        waiting["reason"]
        == "waiting for credit budget: 3 credits do not fit in the 6-credit budget of batch b-1"
    )
    # A batch's budget does not renew at midnight: the recheck interval is the wait.
    assert outcomes[2].retry_after_seconds == env.settings.budget_recheck_seconds


def test_the_budget_with_no_room_is_the_one_named(env: Env) -> None:
    day_bound = batch_limited(env, 100, per_day=3)
    assert day_bound.handle(line("b-1", 1)).status == "SUBMITTED"
    assert "budget of 2026-01-01" in day_bound.handle(line("b-1", 2)).reason
    batch_bound = batch_limited(env, 3, per_day=100)
    assert "budget of batch b-2" in batch_bound.handle(line("b-2", 1, model="nano-banana-pro")).reason
    assert len(env.provider.submissions) == 1
    assert counters(env) == (3, 0) and batch_counters(env, "b-2") == (0, 0)


def test_a_batch_reservation_settles_and_returns_on_the_batch_too(env: Env) -> None:
    env = batch_limited(env, 9)
    env.provider.credits = 2
    env.handle(line("b-1", 1))
    env.provider.submit_error = ProviderServerError(500)
    assert env.handle(line("b-1", 2)).action == "retry"
    assert batch_counters(env, "b-1") == (2, 0)
    assert env.record("b-1-1")["budget"] == {
        "day": DAY, "batch": "b-1", "reserved": 3, "state": "settled", "spent": 2,
    }  # fmt: skip
    assert env.record("b-1-2")["budget"]["state"] == "released"


def test_a_waiting_batch_resumes_when_its_budget_is_raised(env: Env) -> None:
    assert batch_limited(env, 3).handle(line("b-1", 1)).status == "SUBMITTED"
    assert batch_limited(env, 3).handle(line("b-1", 2)).action == "requeue"
    env.clock.advance(86_400)  # a new day changes nothing for the batch
    assert batch_limited(env, 3).handle(line("b-1", 2)).action == "requeue"
    assert batch_limited(env, 6).handle(line("b-1", 2)).status == "SUBMITTED"
    assert batch_counters(env, "b-1") == (6, 0)


DELAYS = (10, 30, 60)
FAILED_EVENT = {"jobId": "job-1", "taskId": "tsk_1", "outcome": "FAILED", "polls": 2}
NO_REFUND_YET = {"status": "FAILED", "errorCode": "EMPTY_RESULT", "creditsUsed": 3, "creditsRefunded": 0}
REFUNDED = NO_REFUND_YET | {"creditsRefunded": 3}


def _finalize(env: Env, poll: dict[str, Any], **event: Any) -> dict[str, Any]:
    return finalize_step(
        FAILED_EVENT | {"poll": poll} | event, env.store, now=env.clock.now, refund_recheck_delays=DELAYS
    )


def test_a_refund_that_shows_on_a_later_snapshot_lands_on_the_record_and_the_budget_once(env: Env) -> None:
    env = limited(env, 9)
    env.handle(job(1))
    first = _finalize(env, NO_REFUND_YET)
    assert (first["status"], first["refundRecheckAfterSeconds"], first["refundChecks"]) == ("FAILED", 10, 0)
    assert counters(env) == (3, 0) and env.record("job-1")["creditsRefunded"] == 0
    # The first recheck still shows none: look again after the next delay.
    again = _finalize(env, NO_REFUND_YET, outcome="REFUND", refundChecks=0)
    assert (again["applied"], again["refundRecheckAfterSeconds"], again["refundChecks"]) == (False, 30, 1)
    stale = env.record("job-1")
    # The second shows it: recorded and returned to the day, in one write; nothing more to wait for.
    later = _finalize(env, REFUNDED, outcome="REFUND", refundChecks=1)
    assert (later["applied"], later["refundRecheckAfterSeconds"]) == (True, 0)
    record = env.record("job-1")
    assert record["creditsRefunded"] == 3 and record["budget"]["refunded"] == 3
    assert counters(env) == (0, 0)
    # A repeated step, or a stale copy of the record, returns nothing twice.
    assert not _finalize(env, REFUNDED, outcome="REFUND", refundChecks=1)["applied"]
    assert not env.store.settle_refund(stale, credits_refunded=3).applied
    assert counters(env) == (0, 0)


def test_a_late_refund_is_recorded_without_a_budget_too(env: Env) -> None:
    env.handle(job(1))
    _finalize(env, NO_REFUND_YET)
    assert _finalize(env, REFUNDED, outcome="REFUND", refundChecks=0)["applied"]
    assert env.record("job-1")["creditsRefunded"] == 3 and "budget" not in env.record("job-1")


def test_when_a_failed_task_is_read_again_for_its_refund() -> None:
    failed = {"status": "FAILED", "error": {"source": "provider"}, "creditsUsed": 3, "creditsRefunded": 0}
    assert [refund_recheck_after(failed, n, DELAYS) for n in range(4)] == [10, 30, 60, 0]
    for done in (
        failed | {"creditsRefunded": 3},  # refunded
        failed | {"creditsUsed": 0},  # nothing charged
        failed | {"error": {"source": "pipeline"}},  # our failure: the provider refunds nothing
        failed | {"status": "COMPLETED"},
        None,
    ):
        assert refund_recheck_after(done, 0, DELAYS) == 0, done
    assert refund_recheck_after(failed, 0, ()) == 0


def test_finalize_returns_the_refund_of_a_failed_job(env: Env) -> None:
    env = limited(env, 9)
    env.handle(job(1))
    event = {
        "jobId": "job-1",
        "taskId": "tsk_1",
        "outcome": "FAILED",
        "poll": {"status": "FAILED", "errorCode": "STORAGE_ERROR", "creditsRefunded": 3},
    }
    finalize_step(event, env.store, now=env.clock.now)
    finalize_step(event, env.store, now=env.clock.now)  # a Step Functions retry
    assert counters(env) == (0, 0)
    assert env.record("job-1")["budget"]["refunded"] == 3


def test_rules() -> None:
    assert budget.credits_to_reserve("gpt-image-2") == 3
    assert budget.credits_to_reserve("nano-banana-2") == 8  # the dearest resolution
    assert budget.credits_to_reserve("veo3") == budget.UNPRICED_RESERVATION  # no catalog price
    assert budget.seconds_until_next_day(1_767_225_600.0 + 86_399.5) == 1.0
    assert budget.day_of(1_767_225_600.0 - 1) == "2025-12-31"
    assert budget.BudgetDay(DAY, 10, reserved=3, spent=4).available == 3
    assert budget.BudgetDay(DAY, 0, reserved=3, spent=4).available is None
    # Every settlement of a batch's reservation changes the batch's counters too.
    held = {"day": DAY, "batch": "b-1", "reserved": 3, "state": budget.HELD}
    assert budget.settle_spent(held, 2) == budget.CounterChange(DAY, reserved=-3, spent=2, batch="b-1")
    assert budget.release(held) == budget.CounterChange(DAY, reserved=-3, batch="b-1")
    settled = {"budget": {**held, "state": budget.SETTLED}, "creditsRefunded": 2}
    assert budget.refund_due(settled) == budget.CounterChange(DAY, spent=-2, batch="b-1")
    assert budget.reservation_for("gpt-image-2", 0, limit=0, batch="b-1", batch_limit=0) is None
    assert budget.reservation_for("gpt-image-2", 0, limit=0, batch=None, batch_limit=5) is None


def test_a_requeued_message_names_its_job() -> None:
    assert json.loads(requeue_body('{"prompt": "p"}', "msg-1")) == {"prompt": "p", "jobId": "msg-1"}
