"""Regression tests for what the reliability suites found (each fails on the code before the fix)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from imagejobs import jobs
from imagejobs.intake import handle_job_message
from imagejobs.store import JobStore
from moto import mock_aws

from imagejobs_tools.reliability.badinput import TABLE, create_jobs_table


def _rejected_reasons(payload: Any) -> list[str]:
    with pytest.raises(jobs.JobValidationError) as caught:
        jobs.parse_job(payload, "msg-1")
    return caught.value.field_errors["body"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected_as_invalid_json(literal: str) -> None:
    # Before: accepted, then the submission failed unexpectedly and the job was marked SUBMIT_UNKNOWN.
    reasons = _rejected_reasons('{"prompt": "a", "providerInput": {"x": ' + literal + "}}")
    assert any(literal.lstrip("-") in reason for reason in reasons)


def test_nan_in_a_mapping_body_is_rejected() -> None:
    assert _rejected_reasons({"prompt": "a", "providerInput": {"x": float("nan")}})


@pytest.mark.parametrize(
    "body",
    ['{"prompt": "a \\ud800 b"}', '{"prompt": "a", "metadata": {"k": "\\udfff"}}', '{"prompt": "a\ud800"}'],
)
def test_unpaired_surrogates_are_rejected_not_crashing(body: str) -> None:
    assert any("Unicode" in reason or "UTF-8" in reason for reason in _rejected_reasons(body))


def test_rejected_surrogate_message_is_recorded_without_crashing_intake() -> None:
    # Before: UnicodeEncodeError from DynamoDB serialisation escaped handle_job_message.
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        create_jobs_table(dynamodb)
        store = JobStore(dynamodb.Table(TABLE))
        outcome = handle_job_message(
            '{"jobId": "surrogate-1", "prompt": "a \\ud800 b"}',
            "msg-1",
            store=store,
            provider=None,
            sfn=None,
            s3=None,
            settings=None,  # type: ignore[arg-type]
        )
        record = store.get("surrogate-1")
    assert outcome.ack and outcome.status == "REJECTED"
    assert record is not None and "body" in record["error"]["fieldErrors"]
    assert "prompt" not in record.get("request", {})  # the unstorable text is not kept


def test_store_outputs_retries_a_worker_that_died_mid_copy() -> None:
    # Before: Runtime.ExitError went to Catch -> FAILED with the first outputs orphaned in S3.
    # The crash suite (test_stack_suites.py) proves the end-to-end effect.
    import json
    from pathlib import Path

    definition = json.loads((Path(__file__).parents[2] / "statemachine" / "job.asl.json").read_text())
    retried = {e for r in definition["States"]["StoreOutputs"]["Retry"] for e in r["ErrorEquals"]}
    assert "Runtime.ExitError" in retried


class _ReleasedMeanwhile(JobStore):
    """The first worker releases its claim just before this worker marks the stale claim."""

    def mark_submit_unknown(self, job_id: str, reason: str, **kwargs: Any) -> Any:
        self.release_claim(
            job_id, {"code": "ProviderServerError", "message": "HTTP 500"}, now=kwargs.get("now")
        )
        return super().mark_submit_unknown(job_id, reason, **kwargs)


def test_stale_claim_released_meanwhile_is_retried_not_acknowledged() -> None:
    # Before: acknowledged as "stale claim: SUBMIT_UNKNOWN" while the record was back at RECEIVED,
    # so SQS deleted the message and the job was lost (found by the faults suite).
    started = 1_767_225_600.0
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        create_jobs_table(dynamodb)
        store = _ReleasedMeanwhile(dynamodb.Table(TABLE))
        request = jobs.parse_job({"jobId": "race-1", "prompt": "a lighthouse"}, "msg-1")
        store.create_received("race-1", request.to_record(), now=started)
        assert store.claim_for_submit("race-1", 4.0, now=started).applied
        outcome = handle_job_message(
            '{"jobId": "race-1", "prompt": "a lighthouse"}',
            "msg-2",
            store=store,
            provider=None,
            sfn=None,
            s3=None,
            settings=None,  # type: ignore[arg-type]
            now=lambda: started + 10,
        )
        record = store.get("race-1")
    assert not outcome.ack and outcome.status == "RECEIVED"
    assert record is not None and record["status"] == "RECEIVED"


def test_a_warm_intake_environment_reports_each_batchs_own_failures(
    load_handler: Any, function_env: dict[str, str], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The BatchProcessor lives for the execution environment (one invocation at a time, as on AWS):
    # a batch's failures must neither leak into the next batch's response nor be wiped by it.
    app = load_handler("intake")

    def record_handler(record: Any, lease: float) -> str:
        if record.body == "fail":
            raise app.RetryLater("retry me")
        return "ok"

    monkeypatch.setattr(app, "record_handler", record_handler)

    def event(prefix: str, bodies: list[str]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": f"{prefix}-{n}",
                    "receiptHandle": "r",
                    "body": body,
                    "attributes": {},
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
                    "awsRegion": "us-east-1",
                }
                for n, body in enumerate(bodies)
            ]
        }

    batches = {"a": ["fail", "ok", "fail", "ok"], "b": ["ok", "ok", "ok", "fail"], "c": ["ok"]}
    for key, bodies in batches.items():  # one warm environment, one invocation after the other
        result = app.lambda_handler(event(key, bodies), lambda_context)
        expected = {f"{key}-{n}" for n, body in enumerate(bodies) if body == "fail"}
        got = [item["itemIdentifier"] for item in result["batchItemFailures"]]
        assert sorted(got) == sorted(expected)
