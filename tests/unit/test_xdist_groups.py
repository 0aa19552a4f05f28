"""`make test` runs `pytest -n 2 --dist loadgroup`: tests of one xdist_group share one worker (one
copy of each shared stack, one Docker stack at a time). pytest 9.2 with pytest-xdist 3.8 silently
spreads every group over the workers (pytest-xdist#1386); this is the check that they do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED_MODULE = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("n", range(4))
def test_records_its_worker(n):
    with open(os.environ["WORKERS_FILE"], "a") as out:
        out.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_the_tests_of_one_xdist_group_run_on_one_worker(tmp_path: Path) -> None:
    for name in ("test_one.py", "test_two.py"):
        (tmp_path / name).write_text(GROUPED_MODULE)
    workers = tmp_path / "workers.txt"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"WORKERS_FILE": str(workers), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ran_on = workers.read_text().split()
    assert len(ran_on) == 8
    assert len(set(ran_on)) == 1, f"one group ran on {sorted(set(ran_on))}: see pytest-xdist#1386"
