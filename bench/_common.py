"""Shared helpers for the benchmarks in bench/ (docs/performance.md).

Every benchmark prints a small table and then ONE line ``BENCH_JSON {...}`` that
tests/bench parses. Nothing here asserts timings: benchmarks report, tests check
that the figures are present and well-formed.

Per-invocation timings and AWS call counts come from the local stack's own hooks
(`LambdaDispatcher.add_observer`, `imagejobs_tools.local.observe`); the stack also applies its
server tuning itself (`imagejobs_tools.local.server_tuning`). The GIL profiler (py-spy) and the
RSS/CPU sampler are benchmark-only.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
JSON_PREFIX = "BENCH_JSON "

for _entry in (REPO / "src", REPO / "layers" / "shared"):
    if str(_entry) not in sys.path:
        sys.path.append(str(_entry))

from imagejobs_tools.local.dispatch import InvocationRecord  # noqa: E402
from imagejobs_tools.local.observe import AwsCallCounts, count_aws_calls  # noqa: E402

# -- arguments and output -----------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny size for the test suite (figures meaningless)")
    return p


def polling_option(name: str) -> dict[str, str]:
    """Template parameters of a polling option (docs/polling.md): ``default``, ``first-poll-auto``,
    ``first-poll-N``, ``polls-N``, or several joined by ``+`` (``first-poll-auto+polls-15``)."""
    parameters: dict[str, str] = {}
    for part in name.split("+"):
        if part == "default":
            continue
        if part.startswith("first-poll-"):
            parameters["FirstPollAfter"] = part.removeprefix("first-poll-")
        elif part.startswith("polls-"):
            parameters["PollsPerInvocation"] = part.removeprefix("polls-")
        else:
            raise SystemExit(f"unknown polling option {part!r} (default, first-poll-auto|N, polls-N, a+b)")
    return parameters


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        # Other work on this (shared) machine skews wall-clock figures: keep the load with them.
        "loadAverage1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def emit(name: str, rows: Sequence[tuple[str, Any, str]], figures: dict[str, Any], smoke: bool) -> None:
    """Print a table (metric, value, target/note) and the one JSON line with every figure."""
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\n{name}{' (smoke size: figures are not meaningful)' if smoke else ''}")
    print(f"{'metric'.ljust(width)}  {'value':>14}  target / note")
    for metric, value, note in rows:
        shown = (
            f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"{metric.ljust(width)}  {shown!s:>14}  {note}")
    document = {"benchmark": name, "smoke": smoke, "machine": machine(), "figures": figures}
    print(JSON_PREFIX + json.dumps(document, sort_keys=True, default=str), flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 4),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
    }


# -- process resources --------------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set size (VmRSS) in MB; 0 where /proc is missing."""
    return _status_kb(pid, "VmRSS") / 1024.0


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) in MB."""
    return _status_kb(pid, "VmHWM") / 1024.0


def _status_kb(pid: int | str, field_name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


@dataclass
class ResourceSampler:
    """Samples the whole stack every ``interval`` seconds: this process and its descendants (the
    functions' worker processes): summed RSS, CPU time and this process's thread count."""

    interval: float = 0.25
    peak_rss_mb: float = 0.0  # the most the stack's processes held at once
    peak_processes: int = 0
    peak_threads: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu_start: float = 0.0
    _wall_start: float = 0.0
    _cpu_by_pid: dict[int, float] = field(default_factory=dict)  # last CPU seconds seen per process
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __enter__(self) -> ResourceSampler:
        self._cpu_by_pid = {pid: process_cpu_seconds(pid) for pid in stack_pids()}
        self._cpu_start = sum(self._cpu_by_pid.values())
        self._wall_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="bench-resource-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        self.cpu_seconds = sum(self._cpu_by_pid.values()) - self._cpu_start
        self.wall_seconds = time.perf_counter() - self._wall_start

    def _sample(self) -> None:
        pids = stack_pids()
        for pid in pids:
            self._cpu_by_pid[pid] = max(self._cpu_by_pid.get(pid, 0.0), process_cpu_seconds(pid))
        self.peak_rss_mb = max(self.peak_rss_mb, sum(rss_mb(pid) for pid in pids), peak_rss_mb())
        self.peak_processes = max(self.peak_processes, len(pids))
        self.peak_threads = max(self.peak_threads, threading.active_count())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def stack_pids() -> list[int]:
    """This process and every descendant (Linux /proc; just this process elsewhere)."""
    found = [os.getpid()]
    for pid in found:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _short_frame(frame: str) -> str:
    """py-spy's `function (path/to/file.py:123)` as `function (file.py:123)`."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit('/', 1)[-1]}" if where else function


class GilProfiler:
    """Where the CPU goes: `py-spy record --gil` over this process and its children, attributed to
    components by the innermost frame we can name. `--gil` samples only the thread holding the GIL,
    so threads queued for it (hundreds, on the local stack) do not count as busy.

    Optional: without py-spy (`pip install py-spy`), or where ptrace is not allowed, `shares()` is
    empty and `error` says why.
    """

    BUCKETS = (
        ("moto/stepfunctions", "moto Step Functions interpreter"),
        ("moto/dynamodb", "moto DynamoDB"),
        ("moto/sqs", "moto SQS"),
        ("moto/s3", "moto S3"),
        ("moto/awslambda", "moto Lambda"),
        ("moto/core", "moto core (routing, serializing)"),
        ("moto_server", "moto core (routing, serializing)"),
        ("moto/", "moto other"),
        ("werkzeug", "werkzeug/flask HTTP server"),
        ("flask", "werkzeug/flask HTTP server"),
        ("socketserver", "werkzeug/flask HTTP server"),
        ("http/server", "werkzeug/flask HTTP server"),
        ("botocore", "botocore (clients, signing, parsing)"),
        ("boto3", "botocore (clients, signing, parsing)"),
        ("urllib3", "urllib3/requests/http.client"),
        ("requests/", "urllib3/requests/http.client"),
        ("http/client", "urllib3/requests/http.client"),
        ("imagejobs_tools/sim", "provider simulator"),
        ("imagejobs_tools/local", "local stack glue"),
        ("aws_lambda_powertools", "Powertools"),
        ("imagejobs/", "imagejobs domain"),
        ("functions/", "imagejobs handlers"),
        ("bench/", "benchmark itself"),
    )

    def __init__(self, rate: int = 50) -> None:
        self.rate = rate
        self.counts: collections.Counter[str] = collections.Counter()
        self.functions: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.error: str | None = None
        self._process: Any = None
        self._output = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-gil-{os.getpid()}.txt"

    def __enter__(self) -> GilProfiler:
        import shutil
        import subprocess

        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            self.error = "py-spy not installed (pip install py-spy)"
            return self
        command = [
            py_spy, "record", "--gil", "--subprocesses", "--nonblocking", "--format", "raw",
            "--rate", str(self.rate), "--pid", str(os.getpid()), "--output", str(self._output),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            _, stderr = self._process.communicate(timeout=60)
        except Exception as error:  # a profiler must never fail the benchmark
            self._process.kill()
            self.error = f"py-spy did not stop: {error}"
            return
        if not self._output.exists():
            self.error = f"py-spy wrote nothing: {(stderr or '').strip()[-300:]}"
            return
        for line in self._output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            self.samples += int(count)
            self.counts[self._bucket(frames)] += int(count)
            self.functions[_short_frame(frames[-1])] += int(count)
        self._output.unlink(missing_ok=True)

    def _bucket(self, frames: list[str]) -> str:
        for frame in reversed(frames):  # innermost first
            for needle, label in self.BUCKETS:
                if needle in frame:
                    return label
        return "other"

    def shares(self, top: int = 12) -> list[tuple[str, float]]:
        total = sum(self.counts.values()) or 1
        return [(label, round(100.0 * n / total, 1)) for label, n in self.counts.most_common(top)]


# -- the local stack's instrumentation hooks ----------------------------------------------


@dataclass(frozen=True)
class Invocation:
    function: str  # logical id, e.g. PollFunction
    started: float  # time.time()
    seconds: float
    job_id: str | None
    errored: bool


@dataclass
class InvocationLog:
    """Per-function in-process Lambda invocations: wall durations (seconds) and per-job events."""

    durations: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    events: list[Invocation] = field(default_factory=list)
    memory_mb: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: Invocation) -> None:
        with self.lock:
            self.durations[event.function].append(event.seconds)
            self.events.append(event)

    def by_job(self, function: str) -> dict[str, list[Invocation]]:
        grouped: dict[str, list[Invocation]] = collections.defaultdict(list)
        with self.lock:
            for event in self.events:
                if event.function == function and event.job_id:
                    grouped[event.job_id].append(event)
        return grouped


# The stack's own call counter, at the moto server; the bench's own clients are not counted
# (imagejobs_tools.local.observe).
RequestLog = AwsCallCounts
count_aws_requests = count_aws_calls


def instrument_dispatcher(stack: Any, log: InvocationLog) -> None:
    """Time every invocation (the dispatcher's observer hook, removed when the stack stops)."""
    for loaded in stack.dispatcher.functions.values():
        log.memory_mb[loaded.logical_id] = loaded.memory_mb

    def record(done: InvocationRecord) -> None:
        log.add(
            Invocation(
                done.logical_id or done.function_name,
                done.started,
                done.seconds,
                _job_id(done.event),
                done.errored,
            )
        )

    stack.dispatcher.add_observer(record)


def _job_id(event: Any) -> str | None:
    value = event.get("jobId") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def jobs_with(log: InvocationLog, function: str, ids: set[str], ok_only: bool = True) -> int:
    """How many of ``ids`` have had ``function`` finish (without a function error): a cheap
    completion check that does not load the stack with table scans."""
    with log.lock:
        done = {e.job_id for e in log.events if e.function == function and not (ok_only and e.errored)}
    return len(done & ids)


@contextmanager
def local_stack(
    *,
    poll_interval: int,
    sim_latency: tuple[float, float],
    parameters: dict[str, str] | None = None,
    credits: int = 10_000_000,
    concurrent_jobs: int = 0,
    **options: Any,
) -> Iterator[Any]:
    """The real template on the local stack, in this process, with handler logs at ERROR.

    ``concurrent_jobs``: with PollsPerInvocation > 1 every polling job holds an execution
    environment of PollFunction for most of its life, as on AWS (up to the account's concurrency);
    the stack's default of 2 per function would queue them, so give it one per job.
    ``options``: any other LocalStackConfig field (e.g. ``host``, ``lambda_runtime``).
    """
    from imagejobs_tools.local.stack import LocalStack, LocalStackConfig

    holds_environments = int((parameters or {}).get("PollsPerInvocation", "1")) > 1

    config = LocalStackConfig(
        template_path=REPO / "template.yaml",
        sim_latency=sim_latency,
        poll_interval_seconds=poll_interval,
        api_key_credits=credits,
        parameter_overrides={"LogLevel": "ERROR", **(parameters or {})},
        environment_overrides={"POWERTOOLS_METRICS_DISABLED": "true"},
        concurrency_overrides={"PollFunction": concurrent_jobs + 2} if holds_environments else {},
        **options,
    )
    with LocalStack(config) as stack:
        yield stack


def send_jobs(stack: Any, bodies: Iterable[dict[str, Any]]) -> float:
    """SendMessageBatch in tens; returns the time.time() of the first send."""
    sqs = stack.client("sqs")
    queue = stack.info.outputs["JobsQueueUrl"]
    batch: list[dict[str, Any]] = []
    first = time.time()
    for body in bodies:
        batch.append({"Id": str(len(batch)), "MessageBody": json.dumps(body)})
        if len(batch) == 10:
            sqs.send_message_batch(QueueUrl=queue, Entries=batch)
            batch = []
    if batch:
        sqs.send_message_batch(QueueUrl=queue, Entries=batch)
    return first


def scan_records(stack: Any) -> list[dict[str, Any]]:
    """Every job record (plain JSON types)."""
    from boto3.dynamodb.types import TypeDeserializer

    client = stack.client("dynamodb")
    deserializer = TypeDeserializer()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.info.outputs["JobsTableName"]}
    while True:
        page = client.scan(**kwargs)
        for item in page.get("Items", []):
            items.append({k: _plain(deserializer.deserialize(v)) for k, v in item.items()})
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _plain(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
