"""`imagejobs local up` as a new user meets it: busy ports, SIGTERM while starting, a second stack,
and bad option or parameter values, each failing at once with a message that names it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagejobs_tools.cli import build_parser
from imagejobs_tools.local.command import whole_seconds
from imagejobs_tools.local.template import REPO_TEMPLATE, load_sam_template, parameter_problem

pytestmark = pytest.mark.integration

IMAGEJOBS = [sys.executable, "-m", "imagejobs_tools"]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def run_up(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMAGEJOBS, "local", "up", "--template", str(REPO_TEMPLATE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("option", ["--port", "--sim-port"])
def test_a_busy_port_fails_at_once_naming_the_port(option: str, listening: int, tmp_path: Path) -> None:
    done = run_up(option, str(listening), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{option} {listening}: 127.0.0.1:{listening} is already in use" in done.stdout + done.stderr
    assert not (tmp_path / ".imagejobs" / "local-stack.json").exists()


def test_a_second_stack_refuses_to_strand_the_running_one(listening: int, tmp_path: Path) -> None:
    state = tmp_path / ".imagejobs" / "local-stack.json"
    state.parent.mkdir()
    document = json.dumps({"endpointUrl": f"http://127.0.0.1:{listening}"})
    state.write_text(document)
    done = run_up(cwd=tmp_path)
    assert done.returncode == 2
    assert f"already running at http://127.0.0.1:{listening}" in done.stdout + done.stderr
    assert state.read_text() == document  # the running stack is still findable


def test_sigterm_while_starting_stops_cleanly(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [*IMAGEJOBS, "local", "up", "--template", str(REPO_TEMPLATE), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # moto answering means the start is under way (the stack is created after it): stop it there.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert not (tmp_path / ".imagejobs" / "local-stack.json").exists()


def test_poll_interval_is_whole_seconds_within_the_template_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert [whole_seconds(v) for v in ("0", "2", "300")] == [0, 2, 300]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "up", "--poll-interval", "0.5"])
    assert "--poll-interval: expected whole seconds from 0 to 300" in capsys.readouterr().err
    for bad in ("-1", "301", "x", "1e3"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["local", "up", "--poll-interval", bad])


def test_template_parameters_are_checked_as_cloudformation_would() -> None:
    declared = load_sam_template(REPO_TEMPLATE)["Parameters"]
    poll = declared["PollIntervalSeconds"]
    assert parameter_problem("PollIntervalSeconds", poll, "2") is None
    assert parameter_problem("PollIntervalSeconds", poll, "0.5") == (
        "parameter PollIntervalSeconds: '0.5' is not allowed (whole seconds from 0 to 300)"
    )
    assert parameter_problem("PollIntervalSeconds", poll, "301") is not None
    numbers = {"Type": "Number", "MinValue": 1, "MaxValue": 10}
    assert parameter_problem("N", numbers, "11") == "parameter N: '11' is outside 1..10"
    assert parameter_problem("N", numbers, "ten") == "parameter N: 'ten' is not a number"
    choice = {"Type": "String", "AllowedValues": ["STANDARD", "EXPRESS"]}
    assert (
        parameter_problem("W", choice, "express") == "parameter W: 'express' is not one of STANDARD, EXPRESS"
    )


def test_a_bad_parameter_override_fails_the_start_naming_it(tmp_path: Path) -> None:
    done = run_up("--parameter", "PollIntervalSeconds=0.5", cwd=tmp_path)
    assert done.returncode == 2
    assert "parameter PollIntervalSeconds: '0.5' is not allowed" in done.stdout + done.stderr
