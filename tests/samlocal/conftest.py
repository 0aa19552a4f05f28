"""`sam local` for real: the functions in Lambda containers built from `sam build`, against a local stack.

`make sam-local-setup`'s script runs first (idempotent; `make test` has already started it in the
background, and this waits for it): without a Docker engine it exits 3 and every test here is skipped
with its reason, except under CI=true, where any setup failure fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagejobs_tools.local import samlocal
from tests.e2e.conftest import RunningStack, local_up

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "sam-local-setup"
EVENTS = REPO / "events"
# The script's exit status when no Docker engine can be made available here.
UNAVAILABLE = 3
SKIP_PREFIX = "sam local unavailable: "


@dataclass(frozen=True)
class SamLocal:
    architecture: str
    built_template: Path
    bridge: str  # this machine's address on Docker's bridge: where the stacks listen

    def invoke(self, function: str, event: dict[str, Any], env_vars: Path, workdir: Path) -> dict[str, Any]:
        """`sam local invoke FUNCTION -e EVENT --env-vars FILE`: the function's response."""
        event_file = workdir / f"{function}-event.json"
        event_file.write_text(json.dumps(event), encoding="utf-8")
        command = [
            samlocal.sam_executable(), "local", "invoke", function,
            "--event", str(event_file),
            "--env-vars", str(env_vars),
            *samlocal.container_options(self.built_template, self.architecture),
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=REPO, env=samlocal.sam_environment(), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-4000:]
        # stdout is the response alone; the function's logs and SAM's own lines are on stderr. SAM
        # exits 0 with nothing on stdout when it got no response from the container.
        lines = done.stdout.strip().splitlines()
        assert lines, f"no response from {function}:\n{done.stderr[-4000:]}"
        response: dict[str, Any] = json.loads(lines[-1])
        return response


@pytest.fixture(scope="session")
def sam_local() -> SamLocal:
    done = subprocess.run(
        [str(SETUP)], cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True
    )
    if done.returncode == UNAVAILABLE and os.environ.get("CI") != "true":
        reason = (done.stderr.strip().splitlines() or ["unavailable"])[-1]
        pytest.skip(SKIP_PREFIX + reason.removeprefix("sam-local-setup: ").strip())
    if done.returncode != 0:
        pytest.fail(f"make sam-local-setup failed ({done.returncode}):\n{done.stdout}{done.stderr[-4000:]}")
    return SamLocal(
        architecture=samlocal.machine_architecture(),
        built_template=REPO / samlocal.BUILD_DIR / "template.yaml",
        bridge=samlocal.bridge_address(),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """One line in the summary for all the tests skipped here: the reason is the setup's, not a test's
    (pytest would show one line per test, at the test's location)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and isinstance(report.longrepr, tuple) and SKIP_PREFIX in report.longrepr[2]:
        report.longrepr = (str(SETUP.relative_to(REPO)), None, report.longrepr[2])


def event(name: str, **replacements: str) -> dict[str, Any]:
    """An events/ file with its placeholders (and any other text) replaced: `old=new`."""
    text = (EVENTS / name).read_text(encoding="utf-8")
    for old, new in replacements.items():
        text = text.replace(old, new)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.fixture(scope="module")
def worker_stack(sam_local: SamLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The default stack (worker processes), listening where containers reach it. A 300 s poll
    interval keeps each job's execution waiting: what a test's own `sam local invoke` does to a job is
    all that happens to it."""
    options = ("--host", sam_local.bridge, "--sim-latency", "0:0.05", "--poll-interval", "300")
    with local_up(tmp_path_factory.mktemp("samlocal-workers"), *options) as running:
        yield running


@pytest.fixture(scope="module")
def sam_env(worker_stack: RunningStack) -> Path:
    """`imagejobs local sam-env` for the worker stack."""
    workdir = worker_stack.log_path.parent
    out = workdir / ".imagejobs" / "sam-env.json"
    done = subprocess.run(
        [sys.executable, "-m", "imagejobs_tools.cli", "local", "sam-env", "--out", str(out)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def sam_stack(sam_local: SamLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """`imagejobs local up --lambda sam`: every invocation in a start-lambda container."""
    options = ("--lambda", "sam", "--sim-latency", "0:0.05", "--poll-interval", "0")
    # Stopping start-lambda and its five containers took over 60 s on a loaded CI machine.
    with local_up(
        tmp_path_factory.mktemp("samlocal-sam"), *options, start_timeout=400, stop_timeout=240
    ) as running:
        yield running
