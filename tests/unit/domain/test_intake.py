from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError
from imagejobs.config import IntakeSettings
from imagejobs.first_poll import FirstPollPolicy
from imagejobs.intake import (
    CLAIM_CONTENTION_RETRY_SECONDS,
    IntakeOutcome,
    execution_arn,
    handle_job_message,
    note_last_receive,
)
from imagejobs.provider import (
    InsufficientCredits,
    OutcomeUnknown,
    ProviderRejected,
    ProviderServerError,
    ProviderUnauthorized,
    ProviderUnreachable,
    RateLimited,
)
from imagejobs.store import JobStore
from moto import mock_aws

from tests.conftest import SAMPLE_ENV
from tests.unit.domain.fakes import Clock, FakeProvider, create_jobs_table
from tests.unit.domain.test_urls import PUBLIC

BUCKET = "imagejobs-outputs"


@dataclass
class Env:
    store: JobStore
    sfn: Any
    s3: Any
    settings: IntakeSettings
    provider: FakeProvider
    clock: Clock

    def handle(self, body: Any, message_id: str = "msg-1", **kwargs: Any) -> IntakeOutcome:
        def parse(payload: Any, default_job_id: str, **parse_kwargs: Any) -> Any:
            from imagejobs.jobs import parse_job

            return parse_job(payload, default_job_id, resolver=PUBLIC, **parse_kwargs)

        return handle_job_message(
            body if isinstance(body, str) else json.dumps(body),
            message_id,
            store=kwargs.pop("store", self.store),
            provider=self.provider,
            sfn=kwargs.pop("sfn", self.sfn),
            s3=self.s3,
            settings=self.settings,
            lease_seconds=kwargs.pop("lease_seconds", 60),
            first_poll=kwargs.pop("first_poll", None),
            now=self.clock,
            parse=parse,
        )

    def record(self, job_id: str) -> dict[str, Any]:
        record = self.store.get(job_id)
        assert record is not None
        return record

    def executions(self) -> list[dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.settings.state_machine_arn)["executions"]
        return [self.sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]


@pytest.fixture
def env() -> Iterator[Env]:
    with mock_aws():
        table = create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1"))
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(
            name="imagejobs-job",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/imagejobs-sfn",
        )
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        settings = IntakeSettings.from_env({**SAMPLE_ENV, "STATE_MACHINE_ARN": machine["stateMachineArn"]})
        yield Env(JobStore(table), sfn, s3, settings, FakeProvider(), Clock())


def test_valid_job_is_submitted_once_and_execution_started(env: Env) -> None:
    outcome = env.handle(
        {"jobId": "job-1", "prompt": "a fox", "aspectRatio": "1:1", "metadata": {"team": "a"}}
    )
    assert (outcome.action, outcome.status, outcome.task_id) == ("ack", "SUBMITTED", "tsk_1")
    assert env.provider.submissions == [
        ("image", {"prompt": "a fox", "model": "gpt-image-2", "aspectRatio": "1:1"})
    ]
    record = env.record("job-1")
    assert record["status"] == "SUBMITTED"
    assert record["taskId"] == "tsk_1" and record["creditsUsed"] == 3
    assert record["request"]["metadata"] == {"team": "a"}
    assert record["executionArn"] == execution_arn(env.settings.state_machine_arn, "job-1")
    [execution] = env.executions()
    assert execution["name"] == "job-1"
    assert execution["executionArn"] == record["executionArn"]
    assert json.loads(execution["input"]) == {
        "jobId": "job-1",
        "taskId": "tsk_1",
        "kind": "image",
        "pollIntervalSeconds": 2,
        "deadline": env.clock.now + 600,
        "polls": 0,
    }


def test_the_execution_starts_with_the_first_poll_policys_wait(env: Env) -> None:
    times = {"gpt-image-2": [40.0] * 50}

    class Times:
        def recent_generation_seconds(self, model: str, limit: int) -> list[float]:
            return times.get(model, [])

    env.handle({"jobId": "job-1", "prompt": "a fox"}, first_poll=FirstPollPolicy("auto", 2, Times()))
    [execution] = env.executions()
    started = json.loads(execution["input"])
    assert (started["pollIntervalSeconds"], started["steadyPollIntervalSeconds"]) == (40, 2)


def test_a_model_name_close_to_a_known_one_is_still_submitted_with_a_hint_on_the_record(env: Env) -> None:
    outcome = env.handle({"jobId": "typo-1", "prompt": "a fox", "model": "gpt-image2"})
    assert outcome.status == "SUBMITTED"  # the provider may know models we do not: never rejected
    assert env.provider.submissions[0][1]["model"] == "gpt-image2"
    assert (
        env.record("typo-1")["modelHint"]
        == "'gpt-image2' is not in the model catalog; did you mean gpt-image-2?"
    )
    env.handle({"jobId": "known-1", "prompt": "a fox", "model": "gpt-image-2"})
    env.handle({"jobId": "custom-1", "prompt": "a fox", "model": "acme/house-style-v7"})
    assert "modelHint" not in env.record("known-1") and "modelHint" not in env.record("custom-1")


def test_job_id_defaults_to_the_message_id(env: Env) -> None:
    outcome = env.handle({"prompt": "a fox"}, message_id="3f0a-msg")
    assert outcome.job_id == "3f0a-msg" and env.record("3f0a-msg")["status"] == "SUBMITTED"


def test_invalid_message_is_rejected_recorded_and_acknowledged(env: Env) -> None:
    outcome = env.handle({"jobId": "bad-1", "prompt": "", "colour": "red"})
    assert (outcome.action, outcome.status) == ("ack", "REJECTED")
    record = env.record("bad-1")
    assert record["error"]["source"] == "validation"
    assert set(record["error"]["fieldErrors"]) == {"prompt", "colour"}
    assert env.provider.submissions == []


def test_an_invalid_batch_line_is_rejected_in_its_batch(env: Env) -> None:
    # `imagejobs submit --file` names the batch line; the REJECTED record must count in the batch.
    env.handle({"jobId": "b-1-3", "prompt": "", "batchId": "b-1", "batchLine": 3})
    record = env.record("b-1-3")
    assert (record["status"], record["batchId"], record["batchLine"]) == ("REJECTED", "b-1", 3)
    # A malformed batch id or line is only a field error: no batch to count in.
    env.handle({"jobId": "b-2-1", "prompt": "p", "batchId": "bad id", "batchLine": 1})
    env.handle({"jobId": "b-3-1", "prompt": "p", "batchId": "b-3", "batchLine": 0})
    assert "batchId" not in env.record("b-2-1") and "batchId" not in env.record("b-3-1")


def test_batch_lines_naming_another_jobs_id_are_recorded_under_their_own_id(env: Env) -> None:
    env.handle({"jobId": "sku-1", "prompt": "a fox"})
    # A good line and a bad line, both naming sku-1: each gets its own REJECTED record in the batch.
    env.handle({"jobId": "sku-1", "prompt": "a cat", "batchId": "b-9", "batchLine": 1})
    env.handle({"jobId": "sku-1", "prompt": "", "batchId": "b-9", "batchLine": 2})
    for line, field in ((1, "jobId"), (2, "prompt")):
        record = env.record(f"b-9-{line}")
        assert (record["status"], record["batchId"], record["batchLine"]) == ("REJECTED", "b-9", line)
        assert field in record["error"]["fieldErrors"]
    assert env.record("sku-1")["status"] == "SUBMITTED" and len(env.provider.submissions) == 1
    # Delivered again: nothing new.
    env.handle({"jobId": "sku-1", "prompt": "a cat", "batchId": "b-9", "batchLine": 1})
    assert len(env.provider.submissions) == 1


def test_non_json_message_is_rejected_under_the_message_id(env: Env) -> None:
    outcome = env.handle("not json at all", message_id="m-77")
    assert (outcome.action, outcome.job_id) == ("ack", "m-77")
    assert "body" in env.record("m-77")["error"]["fieldErrors"]


def test_invalid_duplicate_never_touches_an_existing_job(env: Env) -> None:
    env.handle({"jobId": "job-1", "prompt": "a fox"})
    outcome = env.handle({"jobId": "job-1", "prompt": ""})
    assert outcome.action == "ack"
    assert env.record("job-1")["status"] == "SUBMITTED"


def test_duplicate_of_submitted_job_restarts_execution_without_resubmitting(env: Env) -> None:
    env.handle({"jobId": "job-1", "prompt": "a fox"})
    outcome = env.handle({"jobId": "job-1", "prompt": "a fox"})
    assert (outcome.action, outcome.status) == ("ack", "SUBMITTED")
    assert len(env.provider.submissions) == 1
    assert len(env.executions()) == 1


@pytest.mark.parametrize("final", ["COMPLETED", "FAILED", "REJECTED"])
def test_duplicate_of_finished_job_is_acknowledged(env: Env, final: str) -> None:
    env.handle({"jobId": "job-1", "prompt": "a fox"})
    if final == "COMPLETED":
        env.store.mark_completed("job-1", [])
    elif final == "FAILED":
        env.store.mark_failed("job-1", source="provider", code="X", message="m")
    else:
        env.handle({"jobId": "job-2", "prompt": ""})
    job_id = "job-2" if final == "REJECTED" else "job-1"
    outcome = env.handle({"jobId": job_id, "prompt": "a fox"})
    assert (outcome.action, outcome.status) == ("ack", final)
    assert "duplicate" in outcome.reason
    assert len(env.provider.submissions) == 1


def test_young_submit_claim_means_retry_later(env: Env) -> None:
    env.store.create_received("job-1", {"jobId": "job-1", "prompt": "p"}, now=env.clock.now)
    env.store.claim_for_submit("job-1", 60, now=env.clock.now)
    env.clock.advance(30)
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("retry", "SUBMITTING")
    # Looked at again soon, not after the queue's many-minute visibility timeout.
    assert outcome.retry_after_seconds == CLAIM_CONTENTION_RETRY_SECONDS
    assert env.provider.submissions == []


def test_expired_submit_claim_becomes_submit_unknown(env: Env) -> None:
    env.store.create_received("job-1", {"jobId": "job-1", "prompt": "p"}, now=env.clock.now)
    env.store.claim_for_submit("job-1", 60, now=env.clock.now)
    env.clock.advance(61)
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("ack", "SUBMIT_UNKNOWN")
    assert env.provider.submissions == []
    assert env.record("job-1")["error"]["code"] == "SUBMIT_OUTCOME_UNKNOWN"


def test_lost_claim_race_means_retry(env: Env) -> None:
    rival = JobStore(env.store.table)

    class RacingStore(JobStore):
        def claim_for_submit(self, job_id: str, lease_seconds: float, **kwargs: Any) -> Any:
            rival.claim_for_submit(job_id, lease_seconds, **kwargs)  # another worker wins first
            return super().claim_for_submit(job_id, lease_seconds, **kwargs)

    outcome = env.handle({"jobId": "job-1", "prompt": "p"}, store=RacingStore(env.store.table))
    assert (outcome.action, outcome.status) == ("retry", "SUBMITTING")
    assert env.provider.submissions == []


def test_provider_rejection_is_recorded_and_acknowledged(env: Env) -> None:
    env.provider.submit_error = ProviderRejected({"prompt": ["Prompt is required"]})
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("ack", "REJECTED")
    error = env.record("job-1")["error"]
    assert error["source"] == "provider" and error["fieldErrors"] == {"prompt": ["Prompt is required"]}
    assert env.executions() == []


def test_outcome_unknown_is_never_resubmitted(env: Env) -> None:
    env.provider.submit_error = OutcomeUnknown("read timed out after sending", submission=True)
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("ack", "SUBMIT_UNKNOWN")
    env.provider.submit_error = None
    again = env.handle({"jobId": "job-1", "prompt": "p"})
    assert again.action == "ack"
    assert len(env.provider.submissions) == 1


@pytest.mark.parametrize(
    "error",
    [
        ProviderUnauthorized(),
        InsufficientCredits(12),
        RateLimited(2.0),
        ProviderServerError(503),
        ProviderUnreachable("connection refused"),
    ],
)
def test_transient_or_fixable_errors_release_the_claim_and_retry(env: Env, error: Exception) -> None:
    env.provider.submit_error = error
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("retry", "RECEIVED")
    record = env.record("job-1")
    assert record["status"] == "RECEIVED"
    assert record["lastSubmitError"]["code"] == type(error).__name__
    # Only a 429 names its own delay; other trouble keeps the queue's long visibility timeout.
    assert outcome.retry_after_seconds == (2.0 if isinstance(error, RateLimited) else None)
    # SQS redelivers; this time the provider accepts.
    env.provider.submit_error = None
    again = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (again.action, again.status) == ("ack", "SUBMITTED")
    assert env.record("job-1")["submitAttempts"] == 2
    assert len(env.executions()) == 1


def test_unexpected_submit_exception_is_treated_as_unknown(env: Env) -> None:
    env.provider.submit_error = RuntimeError("boom")
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status) == ("ack", "SUBMIT_UNKNOWN")


def test_start_execution_failure_retries_without_resubmitting(env: Env) -> None:
    outcome = env.handle({"jobId": "job-1", "prompt": "p"}, sfn=BrokenSfn())
    assert (outcome.action, outcome.status) == ("retry", "SUBMITTED")
    again = env.handle({"jobId": "job-1", "prompt": "p"})
    assert again.action == "ack"
    assert len(env.provider.submissions) == 1
    [execution] = env.executions()
    assert json.loads(execution["input"])["taskId"] == "tsk_1"


class BrokenSfn:
    """StartExecution keeps failing: throttled, or (`reset`) no response after botocore's retries."""

    def __init__(self, reset: bool = False) -> None:
        self.reset = reset

    def start_execution(self, **kwargs: Any) -> Any:
        if self.reset:
            raise ConnectionClosedError(endpoint_url="https://states.us-east-1.amazonaws.com/")
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "StartExecution"
        )


@pytest.mark.parametrize("reset", [False, True])
def test_redeliveries_of_a_submitted_job_whose_loop_cannot_start_retry_and_the_last_notes_the_dlq(
    env: Env, reset: bool
) -> None:
    """Before: the first receive's retry was handled, but a redelivery's StartExecution error escaped
    handle_job_message, so the last receive never noted the DLQ: a charged job dead-lettered with no
    reason on its record (found by tests/reliability/test_aws_fault_points.py)."""
    body = {"jobId": "job-1", "prompt": "p"}
    for receive in range(1, 4):
        outcome = env.handle(body, sfn=BrokenSfn(reset))
        assert (outcome.action, outcome.status, outcome.task_id) == ("retry", "SUBMITTED", "tsk_1")
        assert note_last_receive(env.store, outcome, receive, 3, now=env.clock) == (receive == 3)
    assert "StartExecution failed" in env.record("job-1")["deadLettered"]["reason"]
    assert len(env.provider.submissions) == 1


def test_s3_inputs_are_sent_as_presigned_urls(env: Env) -> None:
    env.handle({"jobId": "job-1", "prompt": "p", "inputImageUrls": [f"s3://{BUCKET}/inputs/ref.png"]})
    [(_, body)] = env.provider.submissions
    [url] = body["inputImageUrls"]
    assert url.startswith("https://") and "inputs/ref.png" in url and "Signature" in url
    # The record keeps the s3:// URI, never the signature.
    assert env.record("job-1")["request"]["inputImageUrls"] == [f"s3://{BUCKET}/inputs/ref.png"]


def test_video_jobs_use_the_video_endpoint_and_deadline(env: Env) -> None:
    env.handle({"jobId": "v1", "prompt": "waves", "model": "veo3_fast", "inputMode": "text_to_video"})
    assert env.provider.submissions[0][0] == "video"
    [execution] = env.executions()
    payload = json.loads(execution["input"])
    assert payload["kind"] == "video" and payload["deadline"] == env.clock.now + 1800


def test_claim_lost_during_submit_keeps_the_task_id(env: Env) -> None:
    def stale_lease_elsewhere() -> None:
        env.store.mark_submit_unknown("job-1", "lease expired elsewhere")

    env.provider.on_submit = stale_lease_elsewhere
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert (outcome.action, outcome.status, outcome.task_id) == ("ack", "SUBMIT_UNKNOWN", "tsk_1")
    record = env.record("job-1")
    assert record["taskId"] == "tsk_1"
    assert env.executions() == []


def test_released_job_is_resubmitted_with_the_recorded_request(env: Env) -> None:
    env.provider.submit_error = ProviderServerError(500)
    env.handle({"jobId": "job-1", "prompt": "the first prompt"})
    env.provider.submit_error = None
    outcome = env.handle({"jobId": "job-1", "prompt": "a different prompt"})
    assert outcome.status == "SUBMITTED"
    assert [body["prompt"] for _, body in env.provider.submissions] == ["the first prompt"] * 2


def test_provider_field_errors_are_stored_without_url_signatures(env: Env) -> None:
    env.provider.submit_error = ProviderRejected(
        {"inputImageUrls": ["cannot fetch https://b.s3.amazonaws.com/k.png?X-Amz-Signature=SECRETSIG"]}
    )
    env.handle({"jobId": "job-1", "prompt": "p"})
    error = env.record("job-1")["error"]
    assert "SECRETSIG" not in json.dumps(error)
    assert "https://b.s3.amazonaws.com/k.png" in error["fieldErrors"]["inputImageUrls"][0]


def test_the_last_failed_receive_notes_the_dead_letter_on_the_record_and_a_new_claim_clears_it(
    env: Env,
) -> None:
    env.provider.submit_error = ProviderUnauthorized()
    outcome = env.handle({"jobId": "job-1", "prompt": "p"})
    assert outcome.action == "retry"
    # Earlier receives leave it for the queue to retry; so does an unknown maxReceiveCount.
    assert not note_last_receive(env.store, outcome, 4, 5, now=env.clock)
    assert not note_last_receive(env.store, outcome, 5, 0, now=env.clock)
    assert "deadLettered" not in env.record("job-1")

    assert note_last_receive(env.store, outcome, 5, 5, now=env.clock)
    record = env.record("job-1")
    assert record["status"] == "RECEIVED"  # the stored status model is unchanged
    assert record["deadLettered"]["receiveCount"] == 5
    assert "ProviderUnauthorized" in record["deadLettered"]["reason"]

    # Redriven from the DLQ, the key fixed: the claim clears the note and the job goes on.
    env.provider.submit_error = None
    assert env.handle({"jobId": "job-1", "prompt": "p"}).action == "ack"
    record = env.record("job-1")
    assert record["status"] == "SUBMITTED" and "deadLettered" not in record
    # A job that has moved on is never marked.
    assert not note_last_receive(env.store, outcome, 5, 5, now=env.clock)


def test_a_missing_api_key_is_recorded_as_secret_not_configured(env: Env) -> None:
    from imagejobs.secrets import SecretNotConfigured

    try:
        raise ProviderUnreachable("provider unreachable") from SecretNotConfigured("secret k is empty")
    except ProviderUnreachable as error:
        env.provider.submit_error = error
    assert env.handle({"jobId": "job-1", "prompt": "p"}).action == "retry"
    last = env.record("job-1")["lastSubmitError"]
    assert (last["code"], last["message"]) == ("SecretNotConfigured", "secret k is empty")


def test_every_record_write_resent_after_a_lost_response_still_submits_once_and_starts_the_loop(
    env: Env,
) -> None:
    """A reset after DynamoDB applied a write makes botocore send it again, and the resent conditional
    write fails its own condition: the claim must not look lost (the job would end SUBMIT_UNKNOWN
    without a task) and SUBMITTED must not look like another writer's (no execution would start)."""
    from tests.unit.domain.test_store import ResentAfterLostResponse

    store = JobStore(ResentAfterLostResponse(env.store.table))
    outcome = env.handle({"jobId": "job-1", "prompt": "a fox"}, store=store)
    assert (outcome.action, outcome.status) == ("ack", "SUBMITTED")
    assert len(env.provider.submissions) == 1
    assert [e["name"] for e in env.executions()] == ["job-1"]
