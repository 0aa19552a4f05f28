"""The stack suites at smoke size on an in-process local stack (one per suite), asserting invariants only.

Full sizes run as `python bench/reliability.py SUITE` (docs/reliability.md).
"""

from __future__ import annotations

import pytest

from imagejobs_tools.reliability import SMOKE_SIZES, run_suite
from imagejobs_tools.reliability.report import SuiteReport

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _assert_shared_invariants(report: SuiteReport) -> None:
    assert report.lost == 0, report.render()
    assert report.duplicates == 0, report.render()
    assert report.checks["credits spent = completed + refunded + SUBMIT_UNKNOWN + TIMED_OUT"], report.render()
    assert report.checks["no DLQ job was charged"], report.render()


def test_duplicate_deliveries_create_one_task_and_one_record_per_job() -> None:
    report = run_suite("duplicates", smoke=True)
    _assert_shared_invariants(report)
    size = SMOKE_SIZES["duplicates"]
    assert report.provider_tasks == size
    assert report.terminal == {"COMPLETED": size}
    assert report.extra["messages sent"] > size  # duplicates were really sent
    assert report.ok, report.render()


def test_provider_faults_end_every_job_recorded_or_dead_lettered_with_exact_credits() -> None:
    report = run_suite("faults", smoke=True)
    _assert_shared_invariants(report)
    assert sum(report.terminal.values()) + report.dlq >= report.jobs_sent
    assert report.extra["faults injected"], "no fault fired: the suite proved nothing"
    assert report.ok, report.render()


def test_crash_at_every_step_boundary_completes_or_flags_without_double_charge_or_orphans() -> None:
    report = run_suite("crashes", smoke=True)
    _assert_shared_invariants(report)
    assert set(report.extra["crashes fired"]) == {
        "after-submit-before-record",
        "after-record-before-execution",
        "mid-copy",
        "after-copy-before-record",
        "before-batch-count",
    }
    outcomes = report.extra["outcome by crash point"]
    # A worker that died holding an accepted task cannot know its id: the job is flagged, never resubmitted.
    assert set(outcomes["after-submit-before-record"]) == {"SUBMIT_UNKNOWN"}
    for point in (
        "after-record-before-execution",
        "mid-copy",
        "after-copy-before-record",
        "before-batch-count",
    ):
        assert set(outcomes[point]) == {"COMPLETED"}, outcomes
    assert report.checks["no orphaned S3 objects"]
    # The jobs came in as one batch: its results were written once and count what the records say.
    assert report.checks["exactly one results file and one summary (no second version)"]
    assert report.checks["the summary's counts are the records'"]
    assert report.ok, report.render()


def test_wrong_key_and_empty_balance_keep_jobs_queued_until_fixed() -> None:
    report = run_suite("account", smoke=True)
    _assert_shared_invariants(report)
    assert report.checks["nothing charged while the key was wrong"]
    assert report.terminal == {"COMPLETED": report.jobs_sent}
    assert report.provider_tasks == report.jobs_sent
    assert report.ok, report.render()


def test_aws_faults_end_every_job_recorded_or_dead_lettered_never_submitted_twice() -> None:
    report = run_suite("aws-faults", smoke=True)
    _assert_shared_invariants(report)
    assert sum(report.terminal.values()) + report.dlq >= report.jobs_sent
    injected = report.extra["AWS faults injected"]
    assert injected.get("throttle") and injected.get("server_error"), "no AWS fault fired: nothing proven"
    assert report.checks["no orphaned S3 objects"]
    assert report.ok, report.render()


def test_a_credit_budget_is_spent_exactly_and_the_rest_waits_until_it_is_raised() -> None:
    report = run_suite("budget", smoke=True)
    _assert_shared_invariants(report)
    size = SMOKE_SIZES["budget"]
    phase1 = report.extra["phase 1 (budget used up)"]
    funded = report.extra["budget"]["funded jobs"]
    assert (phase1["completed"], phase1["waiting"], phase1["provider tasks"]) == (
        funded,
        size - funded,
        funded,
    )
    assert phase1["budget"]["spent"] == report.extra["budget"]["limit"]
    assert report.terminal == {"COMPLETED": size}
    assert report.ok, report.render()


def test_webhooks_deliver_every_transition_signed_and_deduplicable_despite_duplicates_and_500s() -> None:
    report = run_suite("webhooks", smoke=True)
    assert report.ok, report.render()
    _assert_shared_invariants(report)
    figures = report.extra["webhooks"]
    # The faults really happened: 500s answered, and copies the receiver already had were sent again.
    assert figures["answers"]["500"] and figures["answers"]["unanswered"], figures
    assert figures["duplicates received"] >= figures["answers"]["unanswered"], figures
    assert figures["delivered after deduplication"] == figures["transitions"] == 2 * SMOKE_SIZES["webhooks"]
    assert report.extra["messages sent"] > SMOKE_SIZES["webhooks"]
