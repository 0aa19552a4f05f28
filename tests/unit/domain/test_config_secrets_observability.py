from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from imagejobs.config import (
    ConfigError,
    EnvironmentSettings,
    FinalizeSettings,
    IntakeSettings,
    PollSettings,
    StoreOutputsSettings,
)
from imagejobs.observability import redact, safe_url
from imagejobs.secrets import ApiKeySource, SecretNotConfigured, parse_api_key
from moto import mock_aws

from tests.conftest import SAMPLE_ENV


def test_each_handler_model_reads_its_variables() -> None:
    env = {**SAMPLE_ENV, "URL_ALLOW_HOSTS": "127.0.0.1:8080, sim.local:9000", "OUTPUT_PREFIX": "out"}
    intake = IntakeSettings.from_env(env)
    assert intake.jobs_table == "imagejobs-jobs"
    assert intake.output_bucket == "imagejobs-outputs"
    assert intake.state_machine_arn.endswith(":stateMachine:imagejobs-job")
    assert intake.provider_base_url == "https://provider.invalid"
    assert intake.provider_api_key_secret == "imagejobs/provider-api-key"
    assert intake.poll_interval_seconds == 2
    assert intake.max_wait_seconds("image") == 600
    assert intake.max_wait_seconds("video") == 1800
    assert intake.url_allow_hosts == ("127.0.0.1:8080", "sim.local:9000")
    assert intake.presign_ttl_seconds == 900
    assert intake.jobs_queue_url == SAMPLE_ENV["JOBS_QUEUE_URL"]
    store_outputs = StoreOutputsSettings.from_env(env)
    assert store_outputs.output_prefix == "out/"
    assert store_outputs.max_output_bytes == 64 * 1024 * 1024
    assert store_outputs.url_allow_hosts == intake.url_allow_hosts
    poll = PollSettings.from_env(env)
    assert (poll.provider_base_url, poll.provider_api_key_secret) == (
        intake.provider_base_url,
        intake.provider_api_key_secret,
    )
    assert FinalizeSettings.from_env(env).jobs_table == "imagejobs-jobs"


def test_each_model_needs_only_its_own_variables() -> None:
    poll = PollSettings.from_env({"PROVIDER_BASE_URL": "https://p.example/", "PROVIDER_API_KEY_SECRET": "s"})
    assert poll.provider_base_url == "https://p.example"
    assert FinalizeSettings.from_env({"JOBS_TABLE": "t"}).jobs_table == "t"
    assert FinalizeSettings.from_env({"JOBS_TABLE": "t"}).refund_recheck_delays == (10, 30, 60)
    assert FinalizeSettings.from_env(
        {"JOBS_TABLE": "t", "REFUND_RECHECK_DELAYS": "1,2"}
    ).refund_recheck_delays == (1, 2)


def test_defaults_for_optional_variables() -> None:
    required = {k: SAMPLE_ENV[k] for k in ("JOBS_TABLE", "OUTPUT_BUCKET", "STATE_MACHINE_ARN")}
    required |= {"PROVIDER_BASE_URL": "https://p.example", "PROVIDER_API_KEY_SECRET": "s"}
    intake = IntakeSettings.from_env({**required, "JOBS_QUEUE_URL": "q"})
    assert (intake.poll_interval_seconds, intake.url_allow_hosts, intake.presign_ttl_seconds) == (2, (), 3600)
    assert (intake.handover_after_seconds, intake.jobs_max_receive_count) == (0, 0)
    store_outputs = StoreOutputsSettings.from_env(required)
    assert (store_outputs.output_prefix, store_outputs.max_output_bytes) == ("outputs/", 512 * 1024 * 1024)


@pytest.mark.parametrize(
    ("model", "override", "variable", "reason_part"),
    [
        (FinalizeSettings, {"JOBS_TABLE": ""}, "JOBS_TABLE", "required"),
        (
            FinalizeSettings,
            {"JOBS_TABLE": "t", "REFUND_RECHECK_DELAYS": "10,x"},
            "REFUND_RECHECK_DELAYS",
            "seconds",
        ),
        (StoreOutputsSettings, {"OUTPUT_BUCKET": "  "}, "OUTPUT_BUCKET", "required"),
        (PollSettings, {"PROVIDER_BASE_URL": "ftp://x"}, "PROVIDER_BASE_URL", "http"),
        (IntakeSettings, {"POLL_INTERVAL_SECONDS": "two"}, "POLL_INTERVAL_SECONDS", "number"),
        (StoreOutputsSettings, {"MAX_OUTPUT_BYTES": "0"}, "MAX_OUTPUT_BYTES", ">="),
        (IntakeSettings, {"URL_ALLOW_HOSTS": "127.0.0.1"}, "URL_ALLOW_HOSTS", "host:port"),
        (StoreOutputsSettings, {"URL_ALLOW_HOSTS": "h:99999"}, "URL_ALLOW_HOSTS", "host:port"),
        (StoreOutputsSettings, {"OUTPUT_PREFIX": "/abs"}, "OUTPUT_PREFIX", "relative"),
        (IntakeSettings, {"JOBS_QUEUE_URL": ""}, "JOBS_QUEUE_URL", "required"),
    ],
)
def test_settings_errors_name_the_variable(
    model: type[EnvironmentSettings], override: dict[str, str], variable: str, reason_part: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        model.from_env({**SAMPLE_ENV, **override})
    assert excinfo.value.variable == variable
    assert variable in str(excinfo.value) and reason_part in str(excinfo.value)


def test_missing_variable_is_named() -> None:
    env = dict(SAMPLE_ENV)
    del env["STATE_MACHINE_ARN"]
    with pytest.raises(ConfigError, match="STATE_MACHINE_ARN"):
        IntakeSettings.from_env(env)
    # Only IntakeFunction starts executions: the other functions do not need the variable.
    assert PollSettings.from_env(env).provider_base_url == SAMPLE_ENV["PROVIDER_BASE_URL"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("sk_live_abc", "sk_live_abc"),
        ("  sk_live_abc\n", "sk_live_abc"),
        ('{"apiKey": "sk_json"}', "sk_json"),
    ],
)
def test_api_key_formats(raw: str, key: str) -> None:
    assert parse_api_key("s", raw) == key


@pytest.mark.parametrize("raw", ["", "   ", None, '{"apiKey": ""}', '{"other": "x"}', "{not json"])
def test_empty_secret_explains_how_to_set_it(raw: str | None) -> None:
    with pytest.raises(SecretNotConfigured) as excinfo:
        parse_api_key("imagejobs/key", raw)
    assert "imagejobs/key" in str(excinfo.value)


def test_empty_secret_message_names_the_command() -> None:
    with pytest.raises(SecretNotConfigured, match="aws secretsmanager put-secret-value --secret-id k"):
        parse_api_key("k", "")


def test_api_key_source_reads_secrets_manager_and_caches() -> None:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name="imagejobs/key", SecretString=json.dumps({"apiKey": "sk_test_1"}))
        source = ApiKeySource("imagejobs/key", client, max_age=300)
        assert source() == "sk_test_1"
        client.put_secret_value(SecretId="imagejobs/key", SecretString="sk_test_2")
        assert source() == "sk_test_1"  # cached for max_age
        assert "sk_test" not in repr(source)
        fresh = ApiKeySource("imagejobs/key", client, max_age=0)
        assert fresh() == "sk_test_2"


def test_safe_url_drops_query_fragment_and_credentials() -> None:
    url = "https://user:pw@bucket.s3.amazonaws.com/k/a.png?X-Amz-Signature=secret&X-Amz-Credential=c#frag"
    assert safe_url(url) == "https://bucket.s3.amazonaws.com/k/a.png"


def test_redact_masks_keys_tokens_and_signatures() -> None:
    text = (
        "failed: Authorization: Bearer sk_live_SECRET1 url=https://b.s3.amazonaws.com/x?X-Amz-Signature=abc "
        '{"apiKey": "sk_live_SECRET2"} raw X-Amz-Signature=deadbeef'
    )
    cleaned = redact(text)
    for secret in ("SECRET1", "SECRET2", "abc", "deadbeef"):
        assert secret not in cleaned
    assert "https://b.s3.amazonaws.com/x" in cleaned
    assert len(redact("x" * 5000, max_chars=100)) == 100


def test_logger_masks_secrets_in_every_message() -> None:
    import logging

    from imagejobs.observability import logger

    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Capture()
    logger._logger.addHandler(handler)
    try:
        logger.warning("fetch %s with Bearer %s", "https://h/x.png?X-Amz-Signature=SIG1", "sk_live_KEY1")
    finally:
        logger._logger.removeHandler(handler)
    [record] = records
    text = record.getMessage()
    assert "SIG1" not in text and "KEY1" not in text
    assert "https://h/x.png" in text


def test_disabled_metrics_are_neither_collected_nor_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagejobs import observability

    observability.metrics.clear_metrics()
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    for _ in range(150):  # Powertools prints a metric set by itself once a metric has 100 values
        observability.count("JobsCompleted")
        observability.seconds("JobLatencySeconds", 1.5)
    assert observability.metrics.metric_set == {}
    assert capsys.readouterr().out == ""

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    observability.count("JobsCompleted", 2)
    try:
        assert observability.metrics.metric_set["JobsCompleted"]["Value"] == [2.0]
    finally:
        observability.metrics.clear_metrics()


class JsonLines(logging.Handler):
    """Formats records with the Powertools logger's own JSON formatter (keys included)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_job_keys_never_outlive_their_job() -> None:
    from imagejobs.observability import bind_job, logger, unbind_job

    capture = JsonLines(logger.registered_formatter)
    logger._logger.addHandler(capture)
    try:
        for job_id in ("job-a", "job-b"):  # a batch's records, one after the other
            bind_job(job_id, model="gpt-image-2", kind="image")
            bind_job(job_id, task_id=f"tsk-{job_id}")  # same job: model and kind are kept
            logger.warning("working")
        bind_job("job-c")  # a later job (e.g. a rejected message) inherits nothing
        logger.warning("rejected")
        unbind_job()
        logger.warning("between jobs")
    finally:
        logger._logger.removeHandler(capture)
        unbind_job()

    lines = {f"{line['message']}:{line.get('job_id')}": line for line in capture.lines}
    for job in ("job-a", "job-b"):
        line = lines[f"working:{job}"]
        assert line["correlation_id"] == job and line["task_id"] == f"tsk-{job}"
        assert line["model"] == "gpt-image-2" and line["kind"] == "image"
    rejected = lines["rejected:job-c"]
    assert rejected["correlation_id"] == "job-c" and not {"task_id", "model", "kind"} & set(rejected)
    assert not {"job_id", "correlation_id"} & set(lines["between jobs:None"])
