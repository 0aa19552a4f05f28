"""`imagejobs local demo` as a user runs it: exit status 0 and decodable images on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import TEMPLATE

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("localstack")]


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
    assert "all 6 jobs ended as expected" in result.stdout
    assert "REJECTED" in result.stdout and "prompt" in result.stdout
    images = sorted((tmp_path / "out").glob("*/*"))
    assert len(images) == 5  # four text-to-image jobs and one image-to-image job
    sizes = set()
    for path in images:
        with Image.open(path) as image:
            image.load()
            sizes.add(image.size)
    assert len(sizes) == 4  # 1:1, 16:9, 9:16 and 4:5 (twice)
