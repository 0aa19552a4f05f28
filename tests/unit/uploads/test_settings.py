"""Upload settings: defaults, and prefixes that would let outputs start new work are refused."""

from __future__ import annotations

import pytest
from imagejobs.config import ConfigError, Settings

from tests.conftest import FUNCTION_ENV


def test_upload_defaults() -> None:
    settings = Settings.from_env(FUNCTION_ENV)
    assert (settings.inputs_prefix, settings.batches_prefix, settings.recipes_prefix) == (
        "inputs/",
        "batches/",
        "recipes/",
    )
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.jobs_queue_url == ""


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"OUTPUT_PREFIX": "inputs/generated/"}, "OUTPUT_PREFIX"),
        ({"OUTPUT_PREFIX": "batches"}, "OUTPUT_PREFIX"),
        ({"INPUTS_PREFIX": "outputs/in/"}, "OUTPUT_PREFIX"),
        ({"RECIPES_PREFIX": "inputs/recipes/"}, "RECIPES_PREFIX"),
        ({"BATCHES_PREFIX": "inputs/batches/"}, "BATCHES_PREFIX"),
    ],
)
def test_overlapping_prefixes_are_refused(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**FUNCTION_ENV, **overrides})
    assert caught.value.variable == variable
    assert "overlaps" in caught.value.reason
