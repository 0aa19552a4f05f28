"""Argument parsing of `imagejobs local` (no stack started)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from imagejobs_tools.cli import build_parser
from imagejobs_tools.local.command import parse_latency, parse_parameter
from imagejobs_tools.local.demo import demo_jobs, demo_png, remove_earlier_demo_outputs

pytestmark = pytest.mark.integration


def test_latency_forms() -> None:
    assert parse_latency("3:8") == (3.0, 8.0)
    assert parse_latency("0.5") == (0.5, 0.5)
    for bad in ("8:3", "x", "1:2:3", "-1:2"):
        with pytest.raises(argparse.ArgumentTypeError, match="--sim-latency"):
            parse_latency(bad)


def test_parameter_form() -> None:
    assert parse_parameter("LogLevel=DEBUG") == ("LogLevel", "DEBUG")
    assert parse_parameter("UrlAllowHosts=") == ("UrlAllowHosts", "")
    with pytest.raises(argparse.ArgumentTypeError, match="Name=Value"):
        parse_parameter("LogLevel")


def test_up_defaults() -> None:
    args = build_parser().parse_args(["local", "up"])
    assert (args.poll_interval, args.sim_latency, args.port, args.sim_port) == (2, (3.0, 8.0), 0, 0)
    demo = build_parser().parse_args(["local", "demo", "--fast"])
    assert demo.sim_latency == (1.0, 3.0) and demo.fast


def test_up_log_view_options(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = build_parser().parse_args(["local", "up"])
    assert (defaults.log_format, defaults.show_metrics) == ("text", False)
    chosen = build_parser().parse_args(["local", "up", "--log-format", "json", "--show-metrics"])
    assert (chosen.log_format, chosen.show_metrics) == ("json", True)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["local", "up", "--log-format", "yaml"])
    assert exit_info.value.code == 2 and "invalid choice: 'yaml'" in capsys.readouterr().err


def test_demo_batch_shape() -> None:
    jobs = demo_jobs("abc", "bucket")
    ratios = {job.message.get("aspectRatio") for job in jobs if job.expected == "COMPLETED"}
    assert {"1:1", "16:9", "9:16", "4:5"} <= ratios
    assert any(job.message.get("inputImageUrls") == ["s3://bucket/demo-inputs/product.png"] for job in jobs)
    assert [job.expected for job in jobs if "prompt" not in job.message] == ["REJECTED"]
    assert len({job.job_id for job in jobs}) == len(jobs)
    png = demo_png(8, 4)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png


def test_a_demo_run_removes_only_the_folders_earlier_demo_runs_made(tmp_path: Path) -> None:
    for name in ("demo-0a1b2c-edit", "demo-0a1b2c-batch-3", "demo-notes", "mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "image.png").write_bytes(b"x")
    (tmp_path / "demo-0a1b2c-file").write_text("a file, not a folder the demo made")
    remove_earlier_demo_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-0a1b2c-file", "demo-notes", "mine"]
