"""Webhooks end to end (docs/webhooks.md): a job's state changes POSTed, signed, to its webhookUrl.

One in-process local stack with a plain-http receiver on loopback (allow-listed, as the simulator is)
and the retry schedule shortened to two 1 s delays through the template parameter WebhookRetryDelays
(three attempts): a receiver that answers 200, one that fails twice with 500 then answers, one that
answers 410, one that is down; and a webhookUrl on a loopback address that is not allow-listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook

from imagejobs_tools.reliability.receiver import WebhookReceiver
from imagejobs_tools.reliability.stacksuites import Harness, job_body, running_stack
from tests.e2e.conftest import TERMINAL, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def answer(path: str, webhook_id: str, attempt: int) -> int:
    """/ok answers 200, /flaky 500 twice per webhook-id then 200, /gone 410, /down always 500."""
    return {"/ok": 200, "/gone": 410, "/down": 500}.get(path, 500 if attempt <= 2 else 200)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(answer) as receiving:
        yield receiving


@pytest.fixture(scope="module")
def harness(receiver: WebhookReceiver) -> Iterator[Harness]:
    with running_stack(
        "sk_test_webhooks", parameters={"WebhookRetryDelays": "1,1"}, allow_hosts=(receiver.host,)
    ) as h:
        yield h


def test_deliveries_are_signed_retried_on_500_not_on_410_and_dead_lettered_after_the_limit(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    h = harness
    jobs = {path: f"wh{path.replace('/', '-')}" for path in ("/ok", "/flaky", "/gone", "/down")}
    h.send([job_body("webhooks", job, webhookUrl=receiver.url(path)) for path, job in jobs.items()])
    h.send([job_body("webhooks", "wh-ssrf", webhookUrl="https://127.0.0.1:8443/hook")])
    ids = {path: {f"{job}/SUBMITTED", f"{job}/COMPLETED"} for path, job in jobs.items()}

    def settled() -> bool:
        dlq = h.webhook_dead_letters()
        return (
            set(receiver.attempts("/ok")) == ids["/ok"]
            and receiver.attempts("/flaky") == {i: 3 for i in ids["/flaky"]}
            and ids["/gone"] | ids["/down"] <= set(dlq)
        )

    wait_for(settled, 120, what="every delivery delivered or dead-lettered", interval=1)

    # A failing endpoint never affects the job: every job completed.
    records = h.records()
    for job in jobs.values():
        assert records[job]["status"] == "COMPLETED", records[job]
    rejected = wait_for(
        lambda: (r := h.records().get("wh-ssrf")) and r.get("status") in TERMINAL and r, 30, what="wh-ssrf"
    )
    assert rejected["status"] == "REJECTED"
    assert "loopback" in " ".join(rejected["error"]["fieldErrors"]["webhookUrl"])

    # Signatures verify with the stack's secret, as a receiver checks them (webhook-id = the event's id).
    secret = h.secrets.get_secret_value(SecretId=h.outputs["WebhookSigningSecretArn"])["SecretString"]
    for request in receiver.received("/ok") + receiver.received("/flaky"):
        payload = Webhook(secret).verify(request.body, request.headers)
        assert request.webhook_id == payload["data"]["eventId"]
        assert payload["type"] == "Job State Change"
    completed = next(r for r in receiver.received("/ok") if r.webhook_id.endswith("/COMPLETED"))
    assert json.loads(completed.body)["data"]["outputs"] == [
        {k: o[k] for k in ("bucket", "key", "uri")} for o in records[jobs["/ok"]]["outputs"]
    ]

    # 410: one attempt, then the DLQ with the reason; 500 forever: three attempts, then the DLQ.
    dlq = h.webhook_dead_letters()
    assert receiver.attempts("/gone") == {i: 1 for i in ids["/gone"]}
    assert {dlq[i] for i in ids["/gone"]} == {"HTTP 410"}
    assert receiver.attempts("/down") == {i: 3 for i in ids["/down"]}
    assert {dlq[i] for i in ids["/down"]} == {"gave up after 3 attempts: HTTP 500"}
    assert not ids["/ok"] & set(dlq) and not ids["/flaky"] & set(dlq)


def test_a_batch_uploaded_with_a_webhook_delivers_every_job_and_the_batch_completion_there(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    h = harness
    key = "batches/hooked.jsonl"
    lines = [
        {"prompt": "batch webhook line 1"},
        {"prompt": "batch webhook line 2", "webhookUrl": receiver.url("/ok")},
    ]
    h.upload_batch(key, lines, metadata={"webhook-url": receiver.url("/batch")})
    [batch_id] = wait_for(
        lambda: [b for b, item in h.batch_items().items() if (item.get("source") or {}).get("key") == key],
        60,
        what="the batch item",
    )
    first, second = f"{batch_id}-1", f"{batch_id}-2"
    expected = {f"{first}/SUBMITTED", f"{first}/COMPLETED", f"batch/{batch_id}/COMPLETED"}
    wait_for(
        lambda: set(receiver.attempts("/batch")) == expected, 120, what="the batch's deliveries", interval=1
    )
    # The line with a webhook of its own is delivered there, not to the batch's.
    assert {f"{second}/SUBMITTED", f"{second}/COMPLETED"} <= set(receiver.attempts("/ok"))

    secret = h.secrets.get_secret_value(SecretId=h.outputs["WebhookSigningSecretArn"])["SecretString"]
    [completion] = [r for r in receiver.received("/batch") if r.webhook_id.startswith("batch/")]
    payload = Webhook(secret).verify(completion.body, completion.headers)
    assert payload["type"] == "Batch Completed"
    assert payload["data"]["summary"]["byStatus"] == {"COMPLETED": 2}
    assert payload["data"]["results"]["key"] == "batches/hooked.results.jsonl"
