"""Upload settings: defaults, and prefixes that would let outputs start new work are refused."""

from __future__ import annotations

import pytest
from imagejobs.config import ConfigError, EnvironmentSettings, S3IntakeSettings, StoreOutputsSettings

from tests.conftest import SAMPLE_ENV


def test_upload_defaults() -> None:
    settings = S3IntakeSettings.from_env(SAMPLE_ENV)
    assert (settings.inputs_prefix, settings.batches_prefix, settings.recipes_prefix) == (
        "inputs/",
        "batches/",
        "recipes/",
    )
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.jobs_queue_url == SAMPLE_ENV["JOBS_QUEUE_URL"]


def test_s3_intake_cannot_start_without_the_jobs_queue() -> None:
    env = {k: v for k, v in SAMPLE_ENV.items() if k != "JOBS_QUEUE_URL"}
    with pytest.raises(ConfigError) as caught:
        S3IntakeSettings.from_env(env)
    assert caught.value.variable == "JOBS_QUEUE_URL"


@pytest.mark.parametrize(
    ("model", "overrides", "variable"),
    [
        # StoreOutputsFunction writes under OUTPUT_PREFIX: never where uploads start work.
        (StoreOutputsSettings, {"OUTPUT_PREFIX": "inputs/generated/"}, "OUTPUT_PREFIX"),
        (StoreOutputsSettings, {"OUTPUT_PREFIX": "batches"}, "OUTPUT_PREFIX"),
        (StoreOutputsSettings, {"INPUTS_PREFIX": "outputs/in/"}, "OUTPUT_PREFIX"),
        (StoreOutputsSettings, {"BATCHES_PREFIX": "inputs/batches/"}, "BATCHES_PREFIX"),
        # S3IntakeFunction reads recipes as configuration, and owns both trigger prefixes.
        (S3IntakeSettings, {"RECIPES_PREFIX": "inputs/recipes/"}, "RECIPES_PREFIX"),
        (S3IntakeSettings, {"BATCHES_PREFIX": "inputs/batches/"}, "BATCHES_PREFIX"),
        (S3IntakeSettings, {"INPUTS_PREFIX": "batches/in/"}, "BATCHES_PREFIX"),
    ],
)
def test_overlapping_prefixes_are_refused(
    model: type[EnvironmentSettings], overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        model.from_env({**SAMPLE_ENV, **overrides})
    assert caught.value.variable == variable
    assert "overlaps" in caught.value.reason
