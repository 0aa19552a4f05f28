"""The simulator's state: keys and their credit ledger, tasks, faults and counters.

One lock guards everything; nothing slow (network, sleeping, image rendering)
happens while it is held. Tasks are resolved lazily: a pending task whose
latency has elapsed (and whose inputs have been fetched) becomes completed or
failed the next time anyone looks at it (a poll, the admin stats or listing),
and a failure refunds its credits at that moment (or, with ``simRefundDelaySeconds``, the first
look after that long: "refunded (or will be shortly)").
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagejobs_tools.sim.catalog import IMAGE_SIZES, GenerationRequest
from imagejobs_tools.sim.config import FaultConfig, Shape, SimulatorConfig, validate_key
from imagejobs_tools.sim.media import sniff_image_type

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TASK_ID_PREFIX = "tsk_"
PENDING, COMPLETED, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", COMPLETED: "completed", FAILED: "failed"}
ERROR_MESSAGES = {
    "EMPTY_RESULT": "The provider reported success but returned no output",
    "STORAGE_ERROR": "The provider could not persist the output",
    "PROVIDER_NSFW_BLOCKED": "The request was blocked by the provider's content safety filter",
}


def mask_key(key: str) -> str:
    """A printable stand-in for an API key: a short prefix plus a hash, never the whole key."""
    prefix = key[: min(8, len(key) // 2)]
    return f"{prefix}***{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def new_task_id(now: float | None = None) -> str:
    """``tsk_`` + a ULID: 10 Crockford base32 chars of milliseconds, 16 of randomness."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return TASK_ID_PREFIX + "".join(reversed(chars))


def is_task_id(text: str) -> bool:
    body = text[len(TASK_ID_PREFIX) :]
    return text.startswith(TASK_ID_PREFIX) and len(body) == 26 and all(c in CROCKFORD for c in body)


def iso_timestamp(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class InputFetch:
    url: str
    ok: bool
    http_status: int | None = None
    bytes: int = 0
    content_type: str | None = None  # sniffed from the bytes
    error: str | None = None
    failure_code: str | None = None  # INPUT_FETCH_FAILED | INPUT_NOT_IMAGE

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "httpStatus": self.http_status,
            "bytes": self.bytes,
            "contentType": self.content_type,
            "error": self.error,
            "failureCode": self.failure_code,
        }


@dataclass
class Task:
    task_id: str
    key: str
    request: GenerationRequest
    created_at: float
    ready_at: float  # time.monotonic() after which the task may leave pending
    planned_failure: str | None
    output_format: str = "png"  # image tasks: "png" | "jpeg"
    status: int = PENDING
    updated_at: float = 0.0
    completed_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    refunded: bool = False
    refund_at: float | None = None  # time.monotonic() when a failed task's refund is due
    fetch_done: bool = True
    inputs_fetched: list[InputFetch] = field(default_factory=list)
    injected_faults: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.request.model.kind

    @property
    def extension(self) -> str:
        if self.kind == "video":
            return "mp4"
        return "jpg" if self.output_format == "jpeg" else "png"

    def output_names(self) -> list[str]:
        if self.status != COMPLETED:
            return []
        count = 1 if self.kind == "video" else self.request.sim.output_count
        return [f"{index}.{self.extension}" for index in range(count)]

    def image_size(self) -> tuple[int, int]:
        return IMAGE_SIZES.get(self.request.aspect_ratio or "auto", IMAGE_SIZES["auto"])


@dataclass
class KeyAccount:
    balance: int
    initial: int
    adjustments: int = 0  # net credits added or removed through the admin API


class InsufficientCredits(Exception):
    def __init__(self, required: int) -> None:
        super().__init__(f"insufficient credits: {required} required")
        self.required = required


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self._reset_locked()

    # --- lifecycle -------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self.accounts: dict[str, KeyAccount] = {
            key: KeyAccount(balance=credits, initial=credits)
            for key, credits in self.config.initial_credits().items()
        }
        self.tasks: dict[str, Task] = {}
        self.faults: FaultConfig = self.config.faults
        self.shape: Shape = self.config.shape
        self.latency = self.config.image_latency()
        self.video_latency = self.config.video_latency_range()
        self.rng = random.Random(self.config.seed)
        self.failure_cycle = 0
        self.requests: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.internal_errors = 0

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()

    # --- keys and faults ---------------------------------------------------------------

    def is_known_key(self, key: str) -> bool:
        with self.lock:
            return key in self.accounts

    def set_credits(self, key: str, credits: int) -> dict[str, Any]:
        validate_key(key)
        with self.lock:
            account = self.accounts.get(key)
            if account is None:
                self.accounts[key] = KeyAccount(balance=credits, initial=credits)
            else:
                account.adjustments += credits - account.balance
                account.balance = credits
            return self._key_stats_locked(key)

    def set_faults(self, changes: dict[str, Any]) -> FaultConfig:
        with self.lock:
            self.faults = self.faults.updated(changes)
            return self.faults

    def configure(
        self,
        shape: Shape | None,
        latency: tuple[float, float] | None,
        video_latency: tuple[float, float] | None,
    ) -> dict[str, Any]:
        with self.lock:
            if shape is not None:
                self.shape = shape
            if latency is not None:
                self.latency = latency
            if video_latency is not None:
                self.video_latency = video_latency
            return self._config_locked()

    def _config_locked(self) -> dict[str, Any]:
        return {"shape": self.shape, "latency": list(self.latency), "videoLatency": list(self.video_latency)}

    def current_config(self) -> dict[str, Any]:
        with self.lock:
            return self._config_locked()

    def roll(self, fault: str) -> bool:
        """Draw whether the named fault (a rate field of FaultConfig) fires now; counts it if so."""
        with self.lock:
            rate = getattr(self.faults, fault)
            fired = rate > 0 and self.rng.random() < rate
            if fired:
                self.faults_injected[fault] += 1
            return fired

    def count_request(self, label: str) -> None:
        with self.lock:
            self.requests[label] += 1

    def count_internal_error(self) -> None:
        with self.lock:
            self.internal_errors += 1

    # --- tasks -----------------------------------------------------------------------

    def create_task(self, key: str, request: GenerationRequest) -> Task:
        """Pre-debit the credits and create a pending task; raises InsufficientCredits (nothing charged)."""
        now = time.time()
        with self.lock:
            account = self.accounts[key]
            if account.balance < request.credits:
                raise InsufficientCredits(request.credits)
            account.balance -= request.credits
            low, high = self.latency if request.model.kind == "image" else self.video_latency
            latency = request.sim.latency_seconds
            if latency is None:
                latency = self.rng.uniform(low, high)
            planned_failure = request.sim.fail_code
            rate = self.faults.task_failure_rate
            if planned_failure is None and rate > 0 and self.rng.random() < rate:
                codes = self.faults.failure_codes
                planned_failure = codes[self.failure_cycle % len(codes)]
                self.failure_cycle += 1
                self.faults_injected["task_failure_rate"] += 1
            task = Task(
                task_id=new_task_id(now),
                key=key,
                request=request,
                created_at=now,
                updated_at=now,
                ready_at=time.monotonic() + latency,
                planned_failure=planned_failure,
                output_format=request.sim.output_format or self.config.output_format,
                fetch_done=not request.input_image_urls,
            )
            self.tasks[task.task_id] = task
            return task

    def release(self, task_id: str) -> Task | None:
        """End a task's pending time now (it still waits for its input fetches)."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None:
                task.ready_at = min(task.ready_at, time.monotonic())
                self._resolve_locked(task)
            return task

    def note_fault(self, task: Task, fault: str) -> None:
        with self.lock:
            task.injected_faults.append(fault)

    def record_fetches(self, task: Task, fetches: list[InputFetch]) -> None:
        with self.lock:
            task.inputs_fetched = fetches
            task.fetch_done = True

    def _resolve_locked(self, task: Task) -> None:
        if task.refund_at is not None and not task.refunded and time.monotonic() >= task.refund_at:
            task.refunded = True
            self.accounts[task.key].balance += task.request.credits
        if task.status != PENDING or not task.fetch_done or time.monotonic() < task.ready_at:
            return
        failure: tuple[str, str] | None = None
        for index, fetch in enumerate(task.inputs_fetched, start=1):
            if not fetch.ok:
                failure = (fetch.failure_code or "INPUT_FETCH_FAILED", f"Input image {index}: {fetch.error}")
                break
        if failure is None and task.planned_failure is not None:
            code = task.planned_failure
            failure = (code, ERROR_MESSAGES.get(code, f"The provider failed the task ({code})"))
        # Resolved when first read, but done when it became ready, as a real provider reports it
        # (detection-delay figures measure from here).
        now = time.time() - max(0.0, time.monotonic() - task.ready_at)
        task.updated_at = task.completed_at = now
        if failure is None:
            task.status = COMPLETED
            return
        task.status = FAILED
        task.error_code, task.error_message = failure
        task.refund_at = task.ready_at + task.request.sim.refund_delay_seconds
        self._resolve_locked(task)  # no delay: refunded at once

    def find_task(self, task_id: str, key: str | None) -> Task | None:
        """The task, resolved to its current state; None if unknown or (with a key) another key's task."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or (key is not None and task.key != key):
                return None
            self._resolve_locked(task)
            return task

    def snapshot(self, task: Task, base_url: str) -> dict[str, Any]:
        with self.lock:
            self._resolve_locked(task)
            return render_snapshot(task, self.shape, base_url)

    # --- admin views -----------------------------------------------------------------

    def _key_stats_locked(self, key: str) -> dict[str, Any]:
        account = self.accounts[key]
        tasks = [t for t in self.tasks.values() if t.key == key]
        spent = sum(t.request.credits for t in tasks)
        refunded = sum(t.request.credits for t in tasks if t.refunded)
        by_status = Counter(STATUS_NAMES[t.status] for t in tasks)
        return {
            "key": mask_key(key),
            "balance": account.balance,
            "initialCredits": account.initial,
            "adjustments": account.adjustments,
            "tasksCreated": len(tasks),
            "spent": spent,
            "refunded": refunded,
            "net": spent - refunded,
            "byStatus": {name: by_status.get(name, 0) for name in STATUS_NAMES.values()},
        }

    def stats(self) -> dict[str, Any]:
        with self.lock:
            for task in self.tasks.values():
                self._resolve_locked(task)
            keys = {mask_key(key): self._key_stats_locked(key) for key in self.accounts}
            return {
                "keys": keys,
                "tasks": len(self.tasks),
                "requests": dict(sorted(self.requests.items())),
                "faultsInjected": dict(sorted(self.faults_injected.items())),
                "internalErrors": self.internal_errors,
                "faults": self.faults.as_dict(),
                **self._config_locked(),
            }

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = []
            for task in self.tasks.values():
                self._resolve_locked(task)
                request = task.request
                rows.append(
                    {
                        "taskId": task.task_id,
                        "key": mask_key(task.key),
                        "type": task.kind,
                        "model": request.model.name,
                        "prompt": request.prompt,
                        "aspectRatio": request.aspect_ratio,
                        "inputMode": request.input_mode,
                        "duration": request.duration,
                        "status": task.status,
                        "statusName": STATUS_NAMES[task.status],
                        "creditsUsed": request.credits,
                        "creditsRefunded": task.refunded,
                        "errorCode": task.error_code,
                        "inputImageUrls": list(request.input_image_urls),
                        "inputsFetched": [f.as_dict() for f in task.inputs_fetched],
                        "injectedFaults": list(task.injected_faults),
                        "createdAt": iso_timestamp(task.created_at),
                        "completedAt": iso_timestamp(task.completed_at),
                    }
                )
            return rows


def render_snapshot(task: Task, shape: Shape, base_url: str) -> dict[str, Any]:
    """``GET /api/ai/tasks/{id}`` body in one of the two documented shapes."""
    urls = [f"{base_url}/files/{task.task_id}/{name}" for name in task.output_names()]
    request = task.request
    if shape == "reference":
        is_video = task.kind == "video"
        return {
            "taskId": task.task_id,
            "type": task.kind,
            "status": task.status,
            "model": request.model.name,
            "prompt": request.prompt,
            "imageUrls": [] if is_video else urls,
            "videoUrl": (urls[0] if urls else None) if is_video else None,
            "errorCode": task.error_code,
            "errorMessage": task.error_message,
            "creditsUsed": request.credits,
            "creditsRefunded": task.refunded,
            "createdAt": iso_timestamp(task.created_at),
            "updatedAt": iso_timestamp(task.updated_at),
        }
    snapshot: dict[str, Any] = {"id": task.task_id, "type": task.kind, "status": task.status}
    if task.status == COMPLETED:
        snapshot["outputImageUrls"] = urls  # the quickstart shape's only output field (the MP4 for video)
    if task.status == FAILED:
        snapshot["errorCode"] = task.error_code
        snapshot["errorMessage"] = task.error_message
    snapshot.update(
        {
            "createdAt": iso_timestamp(task.created_at),
            "completedAt": iso_timestamp(task.completed_at),
            "creditsUsed": request.credits,
            "creditRefunded": task.refunded,
        }
    )
    return snapshot


def fetch_input(url: str, timeout: float, max_bytes: int) -> InputFetch:
    """Download one image-to-image input (no proxies) and check it is an image by its magic bytes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"User-Agent": "imagejobs-provider-simulator"})
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        return InputFetch(
            url=url,
            ok=False,
            http_status=error.code,
            error=f"HTTP {error.code} fetching the URL",
            failure_code="INPUT_FETCH_FAILED",
        )
    except (OSError, ValueError) as error:
        return InputFetch(
            url=url,
            ok=False,
            error=f"could not fetch the URL ({type(error).__name__}: {error})",
            failure_code="INPUT_FETCH_FAILED",
        )
    if len(body) > max_bytes:
        return InputFetch(
            url=url,
            ok=False,
            http_status=status,
            bytes=len(body),
            error=f"larger than {max_bytes} bytes",
            failure_code="INPUT_FETCH_FAILED",
        )
    content_type = sniff_image_type(body[:16])
    if content_type is None:
        return InputFetch(
            url=url,
            ok=False,
            http_status=status,
            bytes=len(body),
            error="not an image (expected PNG, JPEG, WebP or GIF bytes)",
            failure_code="INPUT_NOT_IMAGE",
        )
    return InputFetch(url=url, ok=True, http_status=status, bytes=len(body), content_type=content_type)


def fetch_inputs(state: SimulatorState, task: Task) -> None:
    fetches = [
        fetch_input(url, state.config.fetch_timeout, state.config.max_input_bytes)
        for url in task.request.input_image_urls
    ]
    state.record_fetches(task, fetches)
