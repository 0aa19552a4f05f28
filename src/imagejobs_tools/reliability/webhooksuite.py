"""Suite "webhooks": duplicates with webhooks (docs/reliability.md, docs/webhooks.md).

N jobs, each with a `webhookUrl` on a local receiver, their messages delivered 1-3 times (a few
claims slowed past the visibility timeout, as in "duplicates"); a tenth fail at the provider. The
receiver answers some transitions' first two attempts with 500, and drops the connection after
reading the first attempt of others (the receiver has it, the sender sees no answer: a lost 200,
so it is sent again). Every transition of every job (SUBMITTED and its terminal status) must be
delivered, every request carry a valid signature, and deduplicating by webhook-id must leave
exactly one delivery per transition, all copies of one id alike.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from imagejobs.store import TERMINAL
from imagejobs.webhooks import signing_key, verification_problem

from imagejobs_tools.local.workers import WorkerPlugin
from imagejobs_tools.reliability.receiver import Received, WebhookReceiver
from imagejobs_tools.reliability.report import SuiteReport
from imagejobs_tools.reliability.stacksuites import (
    VISIBILITY_SECONDS,
    analyse,
    check_outputs,
    collect,
    job_body,
    running_stack,
)

RETRY_DELAYS = "1,1,1"  # four attempts, a second apart (Standard Webhooks' schedule, scaled down)
FLAKY_SHARE = 0.2  # transitions whose first two attempts get a 500
LOST_SHARE = 0.1  # transitions whose first attempt is read, then left unanswered
FAILED_SHARE = 0.1  # jobs the provider fails (a FAILED transition instead of COMPLETED)


def run_webhooks(size: int, seed: int = 7) -> SuiteReport:
    rng = random.Random(seed)
    report = SuiteReport("webhooks")
    job_ids = [f"whk-{n:05d}" for n in range(size)]
    failing = set(rng.sample(job_ids, max(1, round(size * FAILED_SHARE))))
    planned = [f"{j}/SUBMITTED" for j in job_ids] + [
        f"{j}/{'FAILED' if j in failing else 'COMPLETED'}" for j in job_ids
    ]
    flaky = set(rng.sample(planned, max(1, round(len(planned) * FLAKY_SHARE))))
    lost = set(rng.sample(sorted(set(planned) - flaky), max(1, round(len(planned) * LOST_SHARE))))

    def answer(path: str, webhook_id: str, attempt: int) -> int | None:
        if webhook_id in flaky and attempt <= 2:
            return 500
        if webhook_id in lost and attempt == 1:
            return None
        return 200

    slow = set(rng.sample(job_ids, max(1, size // 20)))
    slow_claims = WorkerPlugin(
        "imagejobs_tools.reliability.worker_plugins:slow_claims",
        {"jobIds": sorted(slow), "seconds": VISIBILITY_SECONDS + 0.5},
    )
    started = time.perf_counter()
    with (
        WebhookReceiver(answer) as receiver,
        running_stack(
            f"sk_test_whk_{rng.getrandbits(48):012x}",
            parameters={"WebhookRetryDelays": RETRY_DELAYS},
            plugins=(slow_claims,),
            allow_hosts=(receiver.host,),
        ) as h,
    ):
        url = receiver.url("/hooks")

        def body(job_id: str) -> dict[str, Any]:
            fail = {"providerInput": {"simFailCode": "STORAGE_ERROR"}} if job_id in failing else {}
            return job_body("whk", job_id, webhookUrl=url, **fail)

        bodies = [body(j) for j in job_ids for _ in range(rng.randint(1, 3))]
        rng.shuffle(bodies)
        h.send(bodies)

        def transitions() -> set[str] | None:
            """Every transition the records say happened, once every job is terminal."""
            records = h.records()
            statuses = [str(records.get(j, {}).get("status")) for j in job_ids]
            if not all(s in TERMINAL for s in statuses):
                return None
            return {f"{j}/{s}" for j, s in zip(job_ids, statuses, strict=True)} | {
                f"{j}/SUBMITTED" for j in job_ids
            }

        def all_delivered() -> bool:
            expected = transitions()
            return (
                expected is not None
                and expected <= _delivered(receiver.received())
                and h.queue_depth("WebhookDeliveryQueueUrl") == 0
            )

        # Each look scans the table: not too often for a big run.
        interval = 1.0 if size <= 50 else max(2.0, size / 250)
        settled = h.wait(all_delivered, timeout=120 + size * 1.2, interval=interval)
        time.sleep(2)  # a straggling copy (a re-published event) would arrive by now
        expected = transitions() or set()
        requests = receiver.received()
        secret = h.secrets.get_secret_value(SecretId=h.outputs["WebhookSigningSecretArn"])["SecretString"]
        webhook_dlq = h.webhook_dead_letters()
        # A stream batch JobEventsFunction failed 10 times is skipped and described there: its events lost.
        events_dlq = h.queue_depth("JobEventsDeadLetterQueueUrl")
        ledger = collect(h)
        check_outputs(report, h, ledger)
    report.wall_seconds = time.perf_counter() - started
    analyse(report, job_ids, ledger)
    _check_deliveries(report, expected, requests, signing_key("WebhookSigningSecret", secret))
    report.extra["messages sent"] = len(bodies)
    report.extra["slowed past visibility"] = len(slow)
    report.extra["receiver plan"] = {"500 twice": len(flaky), "first attempt unanswered": len(lost)}
    report.check("settled before the timeout", settled)
    report.check("WebhookDeadLetterQueue empty", not webhook_dlq)
    report.check("JobEventsDeadLetterQueue empty (no stream batch skipped)", events_dlq == 0)
    if webhook_dlq:
        report.notes.append(f"dead-lettered deliveries (first 5): {sorted(webhook_dlq.items())[:5]}")
    report.check(
        "the planned terminal statuses (a tenth FAILED, the rest COMPLETED)",
        report.terminal == {"COMPLETED": size - len(failing), "FAILED": len(failing)},
    )
    return report


def _delivered(requests: list[Received]) -> set[str]:
    """The webhook-ids answered with a 2xx: the sender knows these are delivered."""
    return {r.webhook_id for r in requests if r.status is not None and r.status < 300}


def _check_deliveries(report: SuiteReport, expected: set[str], requests: list[Received], signer: Any) -> None:
    processed = [r for r in requests if r.status is None or r.status < 300]  # the receiver has them
    by_id: dict[str, list[Received]] = {}
    for request in processed:
        by_id.setdefault(request.webhook_id, []).append(request)
    attempts = Counter(r.webhook_id for r in requests)
    answered = Counter("unanswered" if r.status is None else str(r.status) for r in requests)
    invalid = [
        (r.webhook_id, problem)
        for r in requests
        if (problem := verification_problem(signer, r.body, r.headers, now=datetime.fromtimestamp(r.at, UTC)))
    ]
    unlike = [
        webhook_id
        for webhook_id, copies in by_id.items()
        if len({json.dumps(json.loads(c.body)["data"], sort_keys=True) for c in copies}) != 1
        or json.loads(copies[0].body)["data"].get("eventId") != webhook_id
    ]
    delivered = _delivered(requests)
    report.extra["webhooks"] = {
        "transitions": len(expected),
        "requests received": len(requests),
        "answers": dict(answered),
        "retries": sum(count - 1 for count in attempts.values()),
        "duplicates received": len(processed) - len(by_id),
        "delivered after deduplication": len(by_id),
    }
    report.check("every transition delivered (a 2xx) at least once, none lost", expected <= delivered)
    report.check("no delivery for a transition that did not happen", set(by_id) <= expected)
    report.check("every request's signature valid (webhook verify, at its arrival)", not invalid)
    report.check(
        "deduplicated by webhook-id: exactly one delivery per transition, copies alike",
        set(by_id) == expected and not unlike,
    )
    if invalid:
        report.notes.append(f"invalid signatures (first 5): {invalid[:5]}")
    if missing := sorted(expected - delivered):
        answers = {i: [r.status for r in requests if r.webhook_id == i] for i in missing[:5]}
        report.notes.append(f"transitions not delivered (first 5), with the answers they got: {answers}")
