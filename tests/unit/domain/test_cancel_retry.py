"""Cancel and retry rules (imagejobs.cancel, imagejobs.retry) against moto, through the intake."""

# ruff: noqa: F811  (the tests take test_intake's `env` fixture, imported by its name)

from __future__ import annotations

import pytest
from imagejobs import retry
from imagejobs.cancel import cancel_job, execution_arns
from imagejobs.jobs import JobValidationError, parse_job
from imagejobs.workflow import finalize_step, store_outputs_step

from tests.unit.domain.test_intake import Env, env  # noqa: F401  (the fixture, by its name)


def test_a_job_cancelled_before_submission_never_reaches_the_provider(env: Env) -> None:
    env.store.create_received(
        "job-1", {"jobId": "job-1", "kind": "image", "model": "gpt-image-2", "prompt": "p"}
    )
    outcome = cancel_job("job-1", store=env.store, sfn=env.sfn, now=env.clock)
    assert (outcome.result, outcome.was_submitted) == ("cancelled", False)
    assert "no credits spent" in outcome.message
    # Its message, delivered after the cancel, finds a finished job.
    assert env.handle({"jobId": "job-1", "prompt": "p"}).action == "ack"
    assert env.provider.submissions == [] and env.record("job-1")["status"] == "CANCELLED"


def test_a_running_job_is_recorded_cancelled_with_its_credits_and_its_execution_stopped(env: Env) -> None:
    env.handle({"jobId": "job-1", "prompt": "p"})
    outcome = cancel_job("job-1", store=env.store, sfn=env.sfn, now=env.clock)
    assert (outcome.result, outcome.was_submitted, outcome.credits_used) == ("cancelled", True, 3)
    assert "3 credits are spent" in outcome.message
    record = env.record("job-1")
    assert record["status"] == "CANCELLED" and record["creditsUsed"] == 3
    assert record["error"]["source"] == "user"
    [execution] = env.executions()
    assert outcome.stopped_executions == (execution["executionArn"],)
    assert execution["status"] == "ABORTED"
    # The loop's later steps leave the record as it is.
    poll = {"status": "FAILED", "errorCode": "X", "creditsRefunded": 3}
    failed = finalize_step({"jobId": "job-1", "outcome": "FAILED", "poll": poll}, env.store)
    assert (failed["applied"], failed["status"]) == (False, "CANCELLED")
    completed = {"jobId": "job-1", "poll": {"status": "COMPLETED", "outputUrls": ["https://x/1.png"]}}
    stored = store_outputs_step(completed, env.store, copier=None, default_prefix="o/")  # type: ignore[arg-type]
    assert stored == {"jobId": "job-1", "status": "CANCELLED", "outputs": []}
    assert env.record("job-1")["status"] == "CANCELLED"


def test_cancel_is_idempotent_and_leaves_finished_and_in_flight_jobs(env: Env) -> None:
    env.handle({"jobId": "job-1", "prompt": "p"})
    cancel_job("job-1", store=env.store, sfn=env.sfn)
    again = cancel_job("job-1", store=env.store, sfn=env.sfn)
    assert (again.result, again.status) == ("already_finished", "CANCELLED")
    assert "left as it is" in again.message
    assert cancel_job("nope", store=env.store, sfn=env.sfn).result == "not_found"
    env.store.create_received("job-2", {"jobId": "job-2", "kind": "image", "prompt": "p"})
    env.store.claim_for_submit("job-2", 60)
    assert cancel_job("job-2", store=env.store, sfn=env.sfn).result == "in_flight"
    assert env.record("job-2")["status"] == "SUBMITTING"


def test_every_execution_of_a_handed_over_job_is_named() -> None:
    record = {"executionArn": "arn:aws:states:r:1:execution:m:j", "executions": ["j", "j-1"]}
    assert execution_arns(record) == [
        "arn:aws:states:r:1:execution:m:j",
        "arn:aws:states:r:1:execution:m:j-1",
    ]
    assert execution_arns({}) == []


def test_retry_ids_count_up_from_the_original() -> None:
    assert retry.retry_id({"jobId": "a"}) == "a-r1"
    assert retry.retry_id({"jobId": "a-r1", "retryOf": "a"}) == "a-r2"
    assert retry.retry_id({"jobId": "x-r7"}) == "x-r7-r1"  # not a retry: its own original
    assert retry.retry_problem({"jobId": "j" * 79, "request": {"prompt": "p"}}) is not None
    assert retry.retry_problem({"jobId": "j"}) == "its record keeps no request to re-send"


def test_a_retry_message_is_the_recorded_request_linked_to_the_original() -> None:
    record = {
        "jobId": "a-r1",
        "retryOf": "a",
        "batchId": "b1",
        "request": {
            "jobId": "a-r1", "kind": "image", "prompt": "p", "model": "gpt-image-2", "retryOf": "a",
            "batchId": "b1", "batchLine": 7,
        },
    }  # fmt: skip
    # In the batch but not one of its lines (the line's own job stays what its results count).
    message = retry.retry_message(record, "a-r2")
    assert message == {
        "jobId": "a-r2",
        "prompt": "p",
        "model": "gpt-image-2",
        "retryOf": "a",
        "batchId": "b1",
    }
    parsed = parse_job(message, "m")
    assert (parsed.job_id, parsed.retry_of, parsed.batch_id) == ("a-r2", "a", "b1")


def test_a_job_is_linked_to_one_retry_only(env: Env) -> None:
    env.provider.submit_error = None
    env.handle({"jobId": "job-1", "prompt": "p", "batchId": "b1"})
    finalize_step({"jobId": "job-1", "outcome": "ERROR", "error": {"Error": "X"}}, env.store)
    assert env.record("job-1")["batchId"] == "b1"
    assert env.store.link_retry("job-1", "job-1-r1", retry.RETRYABLE).applied
    assert not env.store.link_retry("job-1", "job-1-r1", retry.RETRYABLE).applied
    assert env.record("job-1")["retriedAs"] == "job-1-r1"


def test_batch_and_retry_links_must_be_job_ids() -> None:
    with pytest.raises(JobValidationError) as invalid:
        parse_job({"prompt": "p", "batchId": "no spaces", "retryOf": 3}, "m")
    assert set(invalid.value.field_errors) == {"batchId", "retryOf"}
