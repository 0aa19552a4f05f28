"""The local stack's moto speed-ups give moto's own answers, and undo cleanly (private moto API)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import SQSBackend, sqs_backends
from moto.stepfunctions.parser.asl.utils import json_path

from imagejobs_tools.local import moto_fixes, moto_speedups


def test_the_patched_moto_api_is_where_the_speedups_expect_it() -> None:
    moto_speedups.check()


def test_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    moved = ("moto.stepfunctions.parser.gone_in_a_later_moto",)
    monkeypatch.setattr(moto_speedups, "JSONPATH_MODULES", moved)
    with pytest.raises(moto_fixes.MotoFixError, match="gone_in_a_later_moto"):
        moto_speedups.check()


def _queue_with_messages(retention_seconds: int, ages_seconds: list[float]) -> tuple[Any, str, list[Any]]:
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    name = f"speedup-{time.monotonic_ns()}"
    backend.create_queue(name, MessageRetentionPeriod=str(retention_seconds))
    messages = []
    for age in ages_seconds:
        message = backend.send_message(name, "body")
        message.sent_timestamp = int((time.time() - age) * 1000)
        messages.append(message)
    return backend, name, messages


def test_retention_check_gives_moto_answers_without_computing_every_attribute() -> None:
    backend, name, messages = _queue_with_messages(60, [0.0, 30.0, 59.0, 61.0, 3600.0])
    as_released = [backend.is_message_valid_based_on_retention_period(name, m) for m in messages]
    assert as_released == [True, True, True, False, False]

    undo = moto_speedups.install()
    try:
        assert getattr(SQSBackend.is_message_valid_based_on_retention_period, "_imagejobs_speedup", False)
        queue = backend.get_queue(name)
        calls = []
        original_attributes = type(queue).attributes

        def counting_attributes(self: Any) -> Any:
            calls.append(1)
            return original_attributes.fget(self)

        type(queue).attributes = property(counting_attributes)
        try:
            fast = [backend.is_message_valid_based_on_retention_period(name, m) for m in messages]
        finally:
            type(queue).attributes = original_attributes
        assert fast == as_released
        assert calls == []  # no per-message scan of the whole queue
    finally:
        undo()
    assert not getattr(SQSBackend.is_message_valid_based_on_retention_period, "_imagejobs_speedup", False)


def test_jsonpath_is_parsed_once_per_path_and_finds_the_same_values() -> None:
    data = {"poll": {"status": "COMPLETED", "outputUrls": ["a", "b"]}}
    expected = json_path.extract_json("$.poll.status", data)
    original = json_path.parse
    undo = moto_speedups.install()
    try:
        assert json_path.parse is not original
        first = json_path.parse("$.poll.outputUrls")
        assert json_path.parse("$.poll.outputUrls") is first  # cached parse tree
        assert json_path.extract_json("$.poll.status", data) == expected == "COMPLETED"
        assert json_path.extract_json("$.poll.outputUrls", data) == ["a", "b"]
        again = moto_speedups.install()  # a second install does not wrap twice
        assert json_path.parse.__wrapped__ is original  # type: ignore[attr-defined]
        again()
    finally:
        undo()
    assert json_path.parse is original


def test_sqs_clock_gives_moto_times_and_restores_them() -> None:
    import datetime

    from moto.core.utils import unix_time
    from moto.sqs import models

    original = models.unix_time
    undo = moto_speedups.install()
    try:
        assert models.unix_time is moto_speedups.fast_unix_time
        assert abs(models.unix_time() - unix_time()) < 0.05
        assert abs(models.unix_time_millis() - unix_time() * 1000) < 50
        moment = datetime.datetime(2026, 1, 1, 0, 0, 0)
        assert models.unix_time(moment) == unix_time(moment) == 1_767_225_600.0
        # Visibility still works on the fast clock: a received message is invisible, then visible.
        _, _, [message] = _queue_with_messages(60, [0.0])
        message.change_visibility(1)
        assert not message.visible
        message.visible_at = models.unix_time_millis() - 1
        assert message.visible
    finally:
        undo()
    assert models.unix_time is original
