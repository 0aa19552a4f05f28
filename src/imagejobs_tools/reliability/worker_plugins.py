"""What the reliability suites load into the functions' execution environments (`WorkerPlugin`s).

Each runs inside a worker process after its handler's import, with that handler module and the
suite's options: it scales timers down, slows chosen claims, or kills the process at a crash
point. The product code is untouched: only class attributes and the loaded module's objects are
wrapped. State shared between workers (which job crashed already) lives in files, since every
execution environment is a process of its own.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

CRASH_POINTS = (
    "after-submit-before-record",
    "after-record-before-execution",
    "mid-copy",
    "after-copy-before-record",
    # JobEventsFunction, on the job's change into its terminal status, before it counts it in its batch.
    "before-batch-count",
)


def scale_timers(module: ModuleType, options: dict[str, Any]) -> None:
    """Shorter provider read timeout, API-key cache and (IntakeFunction) claim lease."""
    import boto3
    from imagejobs.provider import ProviderClient, Timeout
    from imagejobs.secrets import ApiKeySource

    runtime = getattr(module, "runtime", None)
    if runtime is not None and hasattr(type(runtime), "provider"):
        settings = runtime.settings
        source = ApiKeySource(
            settings.provider_api_key_secret,
            boto3.client("secretsmanager"),
            max_age=int(options["keyCacheSeconds"]),
        )
        runtime.__dict__["provider"] = ProviderClient(
            settings.provider_base_url, source, timeout=Timeout(read=float(options["readTimeoutSeconds"]))
        )
    if hasattr(module, "lease_seconds"):  # IntakeFunction: the claim lease, from imagejobs.sqs_retry
        lease = float(options["leaseSeconds"])
        module.lease_seconds = lambda context: lease  # type: ignore[attr-defined]


def slow_claims(module: ModuleType, options: dict[str, Any]) -> None:
    """The chosen jobs' claims take longer than the queue's visibility timeout."""
    from imagejobs.store import JobStore

    slow = set(options["jobIds"])
    delay = float(options["seconds"])
    original = JobStore.claim_for_submit

    def claim_for_submit(self: JobStore, job_id: str, *args: Any, **kwargs: Any) -> Any:
        if job_id in slow:
            time.sleep(delay)
        return original(self, job_id, *args, **kwargs)

    JobStore.claim_for_submit = claim_for_submit  # type: ignore[method-assign]


def crash_once(markers: Path, job_id: str | None, point: str, targets: dict[str, str]) -> None:
    """SIGKILL this process if `job_id` crashes at `point` and has not crashed yet (any worker)."""
    if job_id is None or targets.get(job_id) != point:
        return
    try:
        marker = os.open(markers / job_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(marker, point.encode())
    os.close(marker)
    os.kill(os.getpid(), signal.SIGKILL)


def crashes(module: ModuleType, options: dict[str, Any]) -> None:
    """Each targeted job's execution environment dies once at its crash point (a real SIGKILL)."""
    from imagejobs import intake
    from imagejobs.batches import BatchStore
    from imagejobs.copier import OutputCopier
    from imagejobs.store import JobStore

    markers = Path(options["markers"])
    targets: dict[str, str] = options["targets"]
    original_submitted = JobStore.mark_submitted
    original_start = intake.start_execution
    original_copy = OutputCopier.copy_one
    original_completed = JobStore.mark_completed
    original_count = BatchStore.count_terminal

    def mark_submitted(self: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        crash_once(markers, job_id, CRASH_POINTS[0], targets)  # the provider has accepted the task
        return original_submitted(self, job_id, *args, **kwargs)

    def start_execution(sfn: SFNClient, settings: Any, job_id: str, payload: Any) -> str:
        crash_once(markers, job_id, CRASH_POINTS[1], targets)
        return original_start(sfn, settings, job_id, payload)

    def copy_one(self: Any, url: str, key_stem: str, **kwargs: Any) -> Any:
        # Output 1 of a two-output job: output 0 is already in S3 when the process dies.
        if key_stem.endswith("/1"):
            crash_once(markers, kwargs.get("job_id"), CRASH_POINTS[2], targets)
        return original_copy(self, url, key_stem, **kwargs)

    def mark_completed(self: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        crash_once(markers, job_id, CRASH_POINTS[3], targets)
        return original_completed(self, job_id, *args, **kwargs)

    def count_terminal(self: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        crash_once(markers, job_id, CRASH_POINTS[4], targets)
        return original_count(self, job_id, *args, **kwargs)

    JobStore.mark_submitted = mark_submitted  # type: ignore[method-assign]
    intake.start_execution = start_execution
    OutputCopier.copy_one = copy_one  # type: ignore[method-assign]
    JobStore.mark_completed = mark_completed  # type: ignore[method-assign]
    BatchStore.count_terminal = count_terminal  # type: ignore[method-assign]


def crashes_fired(markers: Path) -> dict[str, int]:
    """How many jobs crashed at each point, from the markers the workers left."""
    fired = dict.fromkeys(CRASH_POINTS, 0)
    for marker in markers.iterdir():
        point = marker.read_text()
        fired[point] = fired.get(point, 0) + 1
    return fired
