"""Chromium (Debian's package, `make chromium`) driven headless: a page's DOM after load, a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
BROWSER_TIMEOUT = 120
# Root in a container: no sandbox; no GPU; a virtual time budget lets the load event's script run.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000")


def chromium() -> str:
    """The browser; without one the test skips (on CI, where `make test` installs it, it fails)."""
    found = shutil.which("chromium")
    if found is None:
        message = "no chromium on PATH: run `make chromium` (Debian's package; root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _run(*args: str) -> str:
    done = subprocess.run(
        [chromium(), *FLAGS, *args], capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(url: str) -> str:
    return _run("--dump-dom", url)


def screenshot(url: str, name: str, size: str = "1280,1000") -> Path:
    """A PNG of the page, kept under test-artifacts/ (its path printed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    _run(f"--screenshot={path}", f"--window-size={size}", url)
    assert path.stat().st_size > 0
    print(f"\nscreenshot: {path}")
    return path
