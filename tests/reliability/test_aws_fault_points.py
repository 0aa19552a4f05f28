"""A failure point after the provider accepted a job, on the local stack with AWS faults: every
StartExecution of the intake is throttled. The job must never be submitted again and never be left
without a way to its loop: its message reaches the DLQ with the reason on the SUBMITTED record, and a
redrive once StartExecution works again runs it to COMPLETED on the same provider task."""

from __future__ import annotations

import json

import pytest

from imagejobs_tools.local.aws_faults import FaultRule
from imagejobs_tools.reliability.stacksuites import TERMINAL, job_body, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_a_throttled_start_execution_after_submission_never_resubmits_and_is_redriven_to_completion() -> None:
    throttled = (FaultRule("states", "StartExecution", throttle=1.0),)
    with running_stack("sk_test_awf_points", aws_faults=throttled) as h:
        h.send([job_body("awp", "awp-00001")])
        assert h.wait(lambda: h.queue_depth("JobsDeadLetterQueueUrl") == 1, 120)
        # The visibility timeout (2 s) is shorter than botocore's retries of a throttled call, so the
        # last receive's invocation may still be running when its message is in the DLQ already.
        assert h.wait(lambda: "deadLettered" in h.records()["awp-00001"], 60)
        record = h.records()["awp-00001"]
        assert record["status"] == "SUBMITTED"
        assert "StartExecution failed" in record["deadLettered"]["reason"]
        assert len(h.sim.tasks()) == 1  # charged once, never again on any of the receives
        throttles = h.stack.aws_faults.injected()["states.StartExecution"]["throttle"]
        assert throttles >= 5  # every receive tried to start the loop

        h.stack.aws_faults.set_rules(())  # StartExecution works again: the operator redrives
        [message] = h.drain_dlq()
        h.send([json.loads(message["body"])])
        assert h.wait(lambda: h.records()["awp-00001"].get("status") in TERMINAL, 60)
        done = h.records()["awp-00001"]
        tasks = h.sim.tasks()
    assert done["status"] == "COMPLETED"
    assert [t["taskId"] for t in tasks] == [done["taskId"]]
