"""HANDOVER_AFTER_SECONDS: read and checked by IntakeSettings, and put into the execution input by intake."""

from __future__ import annotations

import pytest
from imagejobs.config import ConfigError, IntakeSettings
from imagejobs.intake import execution_input

from tests.conftest import SAMPLE_ENV


def settings_with(**extra: str) -> IntakeSettings:
    return IntakeSettings.from_env({**SAMPLE_ENV, **extra})


def test_handover_is_off_unless_the_variable_is_set() -> None:
    assert settings_with().handover_after_seconds == 0
    assert settings_with(HANDOVER_AFTER_SECONDS=" ").handover_after_seconds == 0
    assert settings_with(HANDOVER_AFTER_SECONDS="240").handover_after_seconds == 240
    assert settings_with(HANDOVER_AFTER_SECONDS="1.5").handover_after_seconds == 1.5


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("soon", "must be a number"),
        ("-1", "must be >= 0"),
        ("300", "must be below 300"),
        ("inf", "must be below 300"),
        ("nan", "must be below 300"),
    ],
)
def test_a_bad_handover_value_names_the_variable_and_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(HANDOVER_AFTER_SECONDS=raw)
    assert caught.value.variable == "HANDOVER_AFTER_SECONDS"
    assert reason in str(caught.value)
    assert "HANDOVER_AFTER_SECONDS" in str(caught.value)


def test_execution_input_carries_the_handover_limit_and_segment_start_only_when_set() -> None:
    off = execution_input("job-1", "tsk_1", "image", settings_with(), submitted_at=1000.0)
    assert "handoverAfterSeconds" not in off
    assert "segmentStartedAt" not in off

    on = execution_input(
        "job-1", "tsk_1", "image", settings_with(HANDOVER_AFTER_SECONDS="240"), submitted_at=1000.0
    )
    assert on["handoverAfterSeconds"] == 240
    assert on["segmentStartedAt"] == 1000.0
    assert {k: v for k, v in on.items() if k not in {"handoverAfterSeconds", "segmentStartedAt"}} == off
