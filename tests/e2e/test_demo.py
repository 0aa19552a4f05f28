"""`imagejobs local demo` as a user runs it: exit status 0 and decodable images on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import TEMPLATE

pytestmark = [pytest.mark.e2e]


def test_demo_completes_every_job_and_saves_the_images(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "imagejobs_tools.cli", "local", "demo", "--template", str(TEMPLATE)]
    command += ["--sim-latency", "0:0.05", "--poll-interval", "0", "--timeout", "90"]
    command += ["--output-dir", str(tmp_path / "out")]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # 6 jobs sent to SQS, 1 from a photo upload, 3 from a JSONL batch (whose 4th line is bad).
    assert "all 10 jobs ended as expected" in result.stdout
    assert "Warning" not in result.stdout + result.stderr  # a clean console
    assert "REJECTED" in result.stdout and "prompt" in result.stdout
    assert "4 lines, 3 enqueued, 1 bad (line 4 prompt: is required)" in result.stdout
    # The batch's summary, once its last line is done: the bad line is one of its four jobs.
    assert "4 jobs (COMPLETED 3, REJECTED 1), 9 credits spent (0 refunded)" in result.stdout
    images = sorted((tmp_path / "out").glob("*/*"))
    # four text-to-image, one image-to-image, one photo upload, three batch lines
    assert len(images) == 9
    sizes = set()
    for path in images:
        with Image.open(path) as image:
            image.load()
            sizes.add(image.size)
    assert len(sizes) == 5  # 1:1, 16:9, 9:16, 4:5 and 3:2
