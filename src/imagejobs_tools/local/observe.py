"""Counting the AWS API calls made in this process (benchmarks, cost estimates).

Handlers build plain boto3 clients, and moto's interpreter builds its own, so the one place
every call passes is botocore's `BaseClient._make_api_call`; `count_aws_calls` wraps it for
the duration of a `with` block and restores it after.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AwsCallCounts:
    """Calls by ``service.Operation`` (e.g. ``dynamodb.UpdateItem``)."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    excluded: set[int] = field(default_factory=set)  # id() of clients not to count (the caller's own)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def exclude(self, client: Any) -> Any:
        """Do not count calls made through ``client``; returns it."""
        self.excluded.add(id(client))
        return client

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1


@contextmanager
def count_aws_calls(counts: AwsCallCounts) -> Iterator[AwsCallCounts]:
    """Count every botocore API call in this process (all threads) while the block runs."""
    from botocore.client import BaseClient

    original = BaseClient.__dict__["_make_api_call"]

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        if id(self) not in counts.excluded:
            counts.add(f"{self.meta.service_model.service_name}.{operation_name}")
        return original(self, operation_name, api_params)

    setattr(BaseClient, "_make_api_call", counting)  # noqa: B010 (private: not in the stubs)
    try:
        yield counts
    finally:
        setattr(BaseClient, "_make_api_call", original)  # noqa: B010
