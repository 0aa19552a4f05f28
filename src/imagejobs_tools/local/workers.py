"""Local Lambda execution environments: each a worker process, pooled per function.

A `Worker` is one execution environment: a fresh interpreter (spawned, not
forked) running `lambda_runtime.py` with only the environment its function is
given, which imports the handler once and serves one invocation at a time,
warm between invocations. A `WorkerPool` holds a function's environments, at
most its concurrency limit, starting one when all are busy (a cold start).

Failures are reported as Lambda reports them, so the ASL's Retry/Catch and the
SQS pollers see what they would see on AWS: a worker that runs past its
function's Timeout is killed and replaced (`Sandbox.Timedout`), one that dies
mid-invocation fails it (`Runtime.ExitError`), one whose init raises fails the
invocation with the init error and is discarded.

The platform's log lines (START, END, REPORT, timeouts) go to the same sink as
everything the function writes, one `FunctionLogLine` each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from imagejobs_tools.local import lambda_runtime
from imagejobs_tools.local.logview import FunctionLogLine

LOG = logging.getLogger(__name__)

LogSink = Callable[[FunctionLogLine], None]
# (payload_json, errored): what moto's `_invoke_lambda` returns, less its log tail.
InvocationOutcome = tuple[str, bool]

RUNTIME_SCRIPT = Path(lambda_runtime.__file__)
# Lambda gives a function's init phase 10 s (then retries it inside the invocation).
INIT_TIMEOUT_SECONDS = 10.0
# How long an invocation's last log lines may trail its result through the pipes.
LOG_DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the local Lambda service runs it."""

    logical_id: str
    name: str  # physical name
    arn: str
    handler: str  # "module.attribute"
    code_dir: Path
    memory_mb: int
    timeout_seconds: int
    environment: dict[str, str]  # the worker process's whole environment
    max_concurrency: int  # execution environments at most


@dataclass(frozen=True)
class WorkerPlugin:
    """A `module:function` the runtime calls with (handler module, options) after the handler's import.

    Test tooling only (fault injection, scaled-down timers): the local counterpart of a
    Lambda exec wrapper. The deployed code never knows it exists.
    """

    target: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerOptions:
    python: str = sys.executable
    plugins: tuple[WorkerPlugin, ...] = ()
    init_timeout_seconds: float = INIT_TIMEOUT_SECONDS


class WorkerInitError(RuntimeError):
    """The execution environment could not start; `payload` is the error Lambda would return."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("errorMessage", "init failed"))
        self.payload = payload


def timed_out_payload(request_id: str, seconds: float) -> dict[str, str]:
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after {seconds:.2f} seconds",
    }


def exited_payload(request_id: str, returncode: int | None) -> dict[str, str]:
    if returncode is not None and returncode < 0:
        import signal

        how = f"signal: {signal.Signals(-returncode).name.removeprefix('SIG').lower()}"
        how = "signal: killed" if how == "signal: kill" else how
    else:
        how = f"exit status {returncode}"
    return {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {how}",
    }


def service_error_payload(message: str) -> dict[str, str]:
    return {"errorType": "ServiceException", "errorMessage": message}


class _LogReader:
    """Reads one of a worker's pipes; knows which request each line belongs to from the runtime's markers."""

    def __init__(self, worker: Worker, stream_name: str, pipe: IO[bytes]) -> None:
        self._worker = worker
        self._stream_name = stream_name
        self._pipe = pipe
        self.request_id: str | None = None
        self.ended = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"{worker.spec.logical_id}-{stream_name}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        for raw in iter(self._pipe.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith(lambda_runtime.MARKER):
                _, kind, request_id = text.split(" ", 2)
                self.request_id = request_id if kind == "start" else None
                if kind == "end":
                    self.ended.set()
                continue
            self._worker.emit(text, self.request_id, self._stream_name)
        self._pipe.close()
        self.ended.set()


class Worker:
    """One execution environment. Not thread-safe: its pool lends it to one caller at a time."""

    def __init__(self, spec: FunctionSpec, options: WorkerOptions, sink: LogSink) -> None:
        self.spec = spec
        self._sink = sink
        self.timed_out = False
        started = time.perf_counter()
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [options.python, str(RUNTIME_SCRIPT), str(theirs.fileno())],
                env=spec.environment,
                cwd=spec.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = (
            _LogReader(self, "stdout", self.process.stdout),
            _LogReader(self, "stderr", self.process.stderr),
        )
        plugins = [[plugin.target, plugin.options] for plugin in options.plugins]
        reply = self._request({"type": "init", "plugins": plugins}, options.init_timeout_seconds)
        if not reply or reply.get("type") != "ready":
            self.close()
            if reply is None:
                error = service_error_payload(
                    f"{spec.logical_id}: the execution environment did not start within "
                    f"{options.init_timeout_seconds:g} s (its output is in the function's log)"
                )
            elif not reply:
                error = exited_payload("init", self.process.returncode)
            else:
                error = reply.get("error") or service_error_payload("init failed")
            raise WorkerInitError(error)
        # Lambda reports the init phase, the interpreter's start included, on the first REPORT.
        self.init_seconds: float | None = time.perf_counter() - started

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def emit(self, text: str, request_id: str | None, stream: str = "stdout") -> None:
        spec = self.spec
        try:
            self._sink(
                FunctionLogLine(
                    spec.logical_id, spec.name, spec.memory_mb, request_id, stream, text, time.time()
                )
            )
        except Exception:  # a broken sink must not break the function
            LOG.exception("log sink failed")

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send a message and wait for the answer; None when the time ran out, {} when the worker died."""
        try:
            self._connection.send_bytes(json.dumps(message).encode("utf-8"))
            if not self._connection.poll(timeout):
                return None
            answer: dict[str, Any] = json.loads(self._connection.recv_bytes())
            return answer
        except (EOFError, OSError):
            # The connection closes as the process exits: reap it, so it reads as exited, not hung.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=LOG_DRAIN_SECONDS)
            return {}

    def invoke(self, request_id: str, event: str) -> InvocationOutcome:
        spec = self.spec
        self.emit(f"START RequestId: {request_id} Version: $LATEST", request_id)
        for reader in self._readers:
            reader.ended.clear()
        started = time.perf_counter()
        deadline_ms = int(time.time() * 1000) + spec.timeout_seconds * 1000
        message = {"type": "invoke", "requestId": request_id, "functionArn": spec.arn, "event": event}
        reply = self._request({**message, "deadlineMs": deadline_ms}, spec.timeout_seconds)
        seconds = time.perf_counter() - started
        if reply is None:
            self.timed_out = True
            self.terminate()
            self.process.wait()
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self.emit(
                f"{stamp} {request_id} Task timed out after {spec.timeout_seconds:.2f} seconds", request_id
            )
            outcome: InvocationOutcome = (
                json.dumps(timed_out_payload(request_id, spec.timeout_seconds)),
                True,
            )
        elif not reply:
            self.terminate()  # closed its end without exiting: as good as dead
            self.process.wait()
            outcome = (json.dumps(exited_payload(request_id, self.process.returncode)), True)
        else:
            for reader in self._readers:
                reader.ended.wait(LOG_DRAIN_SECONDS)
            outcome = (str(reply["payload"]), reply["type"] != "result")
        self._report(request_id, seconds)
        return outcome

    def _report(self, request_id: str, seconds: float) -> None:
        spec = self.spec
        duration_ms = seconds * 1000
        parts = [
            f"REPORT RequestId: {request_id}",
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {math.ceil(duration_ms)} ms",
            f"Memory Size: {spec.memory_mb} MB",
            f"Max Memory Used: {self.peak_rss_mb()} MB",
        ]
        if self.init_seconds is not None:
            parts.append(f"Init Duration: {self.init_seconds * 1000:.2f} ms")
            self.init_seconds = None
        self.emit(f"END RequestId: {request_id}", request_id)
        self.emit("\t".join(parts), request_id)

    def peak_rss_mb(self) -> int:
        return _proc_status_mb(self.process.pid, "VmHWM")

    def terminate(self) -> None:
        """Kill the process (any thread); an invocation in flight then fails as an exited runtime."""
        if self.alive:
            self.process.kill()

    def close(self) -> None:
        """Kill, reap and release everything (the worker's owner only: it closes the connection)."""
        self.terminate()
        self.process.wait()
        self._connection.close()
        for reader in self._readers:
            reader.thread.join(timeout=LOG_DRAIN_SECONDS)


def _proc_status_mb(pid: int, field_name: str) -> int:
    """A memory figure of a live process from /proc (0 when it is gone or not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


@dataclass
class PoolStats:
    started: int = 0  # execution environments started (cold starts)
    init_errors: int = 0
    timeouts: int = 0
    exits: int = 0
    peak: int = 0  # most environments alive at once


class WorkerPool:
    """A function's execution environments: reused warm, started on demand up to its concurrency."""

    def __init__(self, spec: FunctionSpec, options: WorkerOptions, sink: LogSink) -> None:
        self.spec = spec
        self._options = options
        self._sink = sink
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()
        self._starting = 0
        self._closed = False
        self._condition = threading.Condition()
        self.stats = PoolStats()

    def invoke(self, event: str) -> InvocationOutcome:
        request_id = str(uuid.uuid4())
        try:
            worker = self._acquire()
        except WorkerInitError as exc:
            return json.dumps(exc.payload), True
        if worker is None:
            return json.dumps(service_error_payload(f"{self.spec.name}: the local stack is stopping")), True
        try:
            outcome = worker.invoke(request_id, event)
        finally:
            self._release(worker)
        return outcome

    def _acquire(self) -> Worker | None:
        with self._condition:
            while True:
                if self._closed:
                    return None
                if self._idle:
                    return self._idle.pop()
                if len(self._workers) + self._starting < self.spec.max_concurrency:
                    self._starting += 1
                    break
                self._condition.wait()
        try:
            worker = Worker(self.spec, self._options, self._sink)
        except BaseException as exc:
            with self._condition:
                self._starting -= 1
                self.stats.init_errors += isinstance(exc, WorkerInitError)
                self._condition.notify()
            raise
        with self._condition:
            self._starting -= 1
            self.stats.started += 1
            if self._closed:
                worker.close()
                return None
            self._workers.add(worker)
            self.stats.peak = max(self.stats.peak, len(self._workers))
        return worker

    def update_environment(self, values: Mapping[str, str]) -> None:
        """Lambda's UpdateFunctionConfiguration of environment variables: invocations from now on
        get environments started with the new variables; warm ones retire (busy ones once done)."""
        with self._condition:
            self.spec = dataclasses.replace(self.spec, environment={**self.spec.environment, **values})
            idle, self._idle = self._idle, []
            self._workers.difference_update(idle)
            self._condition.notify_all()
        for worker in idle:
            worker.close()

    def _release(self, worker: Worker) -> None:
        alive = worker.alive
        if not alive:
            worker.close()  # reap it and join its readers
        current = worker.spec is self.spec
        with self._condition:
            if alive and current and not self._closed:
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
                if worker.timed_out:
                    self.stats.timeouts += 1
                elif not alive:
                    self.stats.exits += 1
            self._condition.notify()
        if alive and (self._closed or not current):
            worker.close()

    @property
    def size(self) -> int:
        with self._condition:
            return len(self._workers)

    def close(self) -> None:
        """Shut every environment down; invocations in flight fail, later ones are refused."""
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = self._workers.difference(idle)
            self._workers.difference_update(idle)
            self._condition.notify_all()
        for worker in idle:
            worker.close()
        for worker in busy:  # their callers see the exit, then close them
            worker.terminate()
