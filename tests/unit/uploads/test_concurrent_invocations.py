"""S3IntakeFunction: concurrent invocations in one process (the local stack) keep their own batch results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import FakeLambdaContext
from tests.unit.uploads.test_handler_and_recursion import handler_env, sqs_event

__all__ = ["handler_env"]  # the fixture, re-exported for this module

WAIT_SECONDS = 10.0


def test_a_concurrent_invocation_does_not_erase_another_ones_failures(
    handler_env: tuple[ModuleType, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, _, _ = handler_env
    first_is_waiting = threading.Event()
    second_finished = threading.Event()

    def fake_handle_upload_message(body: str, **_: Any) -> list[Any]:
        if body == "first-broken":
            raise RuntimeError("this record must be retried")
        if body == "first-slow":
            # The second invocation runs its whole batch while the first is mid-batch.
            first_is_waiting.set()
            assert second_finished.wait(WAIT_SECONDS)
        return []

    monkeypatch.setattr(module, "handle_upload_message", fake_handle_upload_message)
    responses: dict[str, Any] = {}

    def invoke(name: str, event: dict[str, Any], after: Callable[[], None] = lambda: None) -> None:
        try:
            responses[name] = module.lambda_handler(event, FakeLambdaContext())
        finally:
            after()

    first = threading.Thread(target=invoke, args=("first", sqs_event("first-broken", "first-slow")))
    first.start()
    assert first_is_waiting.wait(WAIT_SECONDS)
    invoke("second", sqs_event("second-ok"), after=second_finished.set)
    first.join(WAIT_SECONDS)

    assert responses["second"] == {"batchItemFailures": []}
    # m0 is the first invocation's broken record: it must still be reported for redelivery.
    assert responses["first"] == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
