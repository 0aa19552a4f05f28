"""`imagejobs sim` and `python -m imagejobs_tools.sim` as real processes."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

LISTENING = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))\n$")
KEY = "sk_test_console_1"


def first_line(process: subprocess.Popen[str], timeout: float = 20) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    return lines.get(timeout=timeout)


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).with_name("imagejobs")), "sim"],
        [sys.executable, "-m", "imagejobs_tools.sim"],
    ],
    ids=["console-script", "python-m"],
)
def test_prints_listening_line_serves_and_stops_on_sigterm(command: list[str]) -> None:
    args = [*command, "--port", "0", "--api-key", KEY, "--credits", "5", "--latency", "0:0", "--seed", "1"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        match = LISTENING.match(first_line(process))
        assert match, "first stdout line must be exactly 'listening on http://127.0.0.1:PORT'"
        url = match.group(1)
        assert int(match.group(2)) > 0

        submitted = requests.post(f"{url}/api/ai/image/generate", json={"prompt": "hi"},
                                  headers={"Authorization": f"Bearer {KEY}"}, timeout=10)  # fmt: skip
        assert submitted.status_code == 200
        assert requests.get(f"{url}/_sim/stats", timeout=10).json()["keys"].popitem()[1]["balance"] == 2

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert KEY not in stderr  # keys are masked in its logs
    assert "POST /api/ai/image/generate 200" in stderr


def test_bad_option_values_exit_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagejobs_tools.sim", "--latency", "5:1"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip

    assert result.returncode == 2
    assert "latency" in result.stderr


def test_sigterm_right_after_the_listening_line_stops_cleanly() -> None:
    args = [sys.executable, "-m", "imagejobs_tools.sim", "--port", "0", "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert LISTENING.match(first_line(process))
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
