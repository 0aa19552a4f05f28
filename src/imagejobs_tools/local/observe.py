"""Counting the AWS API calls the local stack serves (benchmarks, cost estimates).

The functions run in worker processes of their own, so calls are counted where they all
arrive: the moto server, through the requests the stack's IAM audit records
(`aws_calls.CallRecorder`). Calls signed with an excluded access key are left out: by default
the callers' own clients (the stack's `testing` key, which tests, benchmarks and the CLI use);
what remains is what the functions, the SQS pollers (their functions' roles) and the Step
Functions interpreter asked for.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from imagejobs_tools.local.aws_calls import SERVICE_MODEL_NAMES
from imagejobs_tools.local.iam_audit import SETUP_KEY


@dataclass
class AwsCallCounts:
    """Calls by ``service.Operation`` (e.g. ``dynamodb.UpdateItem``)."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    excluded_keys: set[str] = field(default_factory=lambda: {SETUP_KEY})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1


@contextmanager
def count_aws_calls(stack: Any, counts: AwsCallCounts) -> Iterator[AwsCallCounts]:
    """Count the requests `stack`'s moto server handles while the block runs (filled in at its end)."""
    if stack.iam_audit is None:
        raise RuntimeError("counting AWS calls needs the stack's IAM audit (LocalStackConfig.iam_audit)")
    recorder = stack.iam_audit.recorder
    start = len(recorder.calls())
    try:
        yield counts
    finally:
        for call in recorder.calls()[start:]:
            if call.access_key_id not in counts.excluded_keys and call.operation:
                counts.add(f"{SERVICE_MODEL_NAMES.get(call.service, call.service)}.{call.operation}")
