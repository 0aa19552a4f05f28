"""`imagejobs sim` options map onto SimulatorConfig (no server started)."""

from __future__ import annotations

import argparse

import pytest

from imagejobs_tools.cli import build_parser
from imagejobs_tools.sim.command import config_from_args
from imagejobs_tools.sim.config import ConfigError, FaultConfig, SimulatorConfig


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sim", *argv])


def test_defaults() -> None:
    config = config_from_args(parse())

    assert config.initial_credits() == {"sk_test_local": 1000}
    assert (config.host, config.port, config.shape, config.latency) == (
        "127.0.0.1",
        0,
        "quickstart",
        (2.0, 5.0),
    )
    assert config.faults == FaultConfig()


def test_every_option_reaches_the_config() -> None:
    config: SimulatorConfig = config_from_args(
        parse(
            "--port", "0", "--api-key", "sk_a_1", "--api-key", "sk_b_2", "--credits", "7",
            "--latency", "0.1:0.2", "--video-latency", "1:2", "--shape", "reference", "--seed", "9",
            "--submit-500-rate", "0.1", "--poll-500-rate", "0.2", "--rate-429", "0.3", "--retry-after", "4",
            "--task-failure-rate", "0.4", "--failure-codes", "EMPTY_RESULT,X_Y", "--hang-rate", "0.5",
            "--hang-seconds", "6", "--lost-response-rate", "0.6", "--slow-output-bps", "1000",
            "--output-format", "jpeg", "--quiet",
        )
    )  # fmt: skip

    assert config.initial_credits() == {"sk_a_1": 7, "sk_b_2": 7}
    assert (config.latency, config.video_latency, config.shape, config.seed) == (
        (0.1, 0.2),
        (1.0, 2.0),
        "reference",
        9,
    )
    assert config.faults == FaultConfig(
        submit_500_rate=0.1, poll_500_rate=0.2, rate_429=0.3, retry_after=4, task_failure_rate=0.4,
        failure_codes=("EMPTY_RESULT", "X_Y"), hang_rate=0.5, hang_seconds=6, lost_response_rate=0.6,
        slow_output_bytes_per_second=1000,
    )  # fmt: skip
    assert (config.output_format, config.log_requests) == ("jpeg", False)


def test_out_of_range_rate_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match="hang_rate"):
        config_from_args(parse("--hang-rate", "1.5"))
