"""What the local stack prints of its functions' output (docs/local-stack.md, "Function logs").

Each Lambda function runs in worker processes; the parent reads every worker's stdout and stderr
line by line and hands each line, as a `FunctionLogLine`, to a sink. `LogView` is the console's
sink: one short human line per log event ("text"), or the functions' own JSON ("json").
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


@dataclass(frozen=True)
class FunctionLogLine:
    logical_id: str  # template logical id, e.g. "PollFunction"
    function_name: str  # physical function name
    memory_mb: int
    request_id: str | None  # the invocation running when the line was written; None during init
    stream: str  # "stdout" or "stderr"
    text: str  # one line, without its trailing newline
    time: float  # time.time() when the line was read


class TextOutput(Protocol):
    """Where a LogView writes: any text stream (sys.stdout, io.StringIO, CurrentStdout())."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class CurrentStdout:
    """sys.stdout as it is at each write. While rich shows a status spinner or a live table it swaps
    in a proxy that prints lines above the display; writing to the original stream would garble it."""

    def write(self, text: str, /) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


# What the Lambda runtime (here: the worker pool) writes around each invocation.
_RUNTIME_LINE = re.compile(r"^(START|END|REPORT) RequestId: ")
_TIMEOUT = re.compile(r"Task timed out after [\d.]+ seconds")
_REPORT_FIELD = re.compile(
    r"(Init Duration|Billed Duration|Duration|Memory Size|Max Memory Used): ([\d.]+ (?:ms|MB))"
)
# Keys that name the job an event is about: bind_job's correlation id first, then explicit extras.
_JOB_ID_KEYS = ("correlation_id", "jobId", "job_id")
_SHORT_REQUEST_ID = 8


class LogView:
    """A sink for `FunctionLogLine`s that writes them to `out`, one whole line at a time.

    "text": `HH:MM:SS.mmm Function request-id [job=...] LEVEL message | exception` for Powertools
    events; other lines as written; START/END hidden, REPORT only for cold starts, timeouts always.
    "json": each JSON object exactly as the function wrote it; any other line wrapped as
    `{"function", "requestId", "stream", "message"}`, so the output is one JSON object per line.
    EMF metric blobs (Powertools Metrics) are hidden in both unless `show_metrics`.
    Thread-safe: every worker's reader threads call it.
    """

    def __init__(self, out: TextOutput, log_format: LogFormat = "text", show_metrics: bool = False) -> None:
        self.out = out
        self.log_format = log_format
        self.show_metrics = show_metrics
        self._lock = threading.Lock()

    def __call__(self, line: FunctionLogLine) -> None:
        rendered = self.render(line)
        if rendered is None:
            return
        with self._lock:
            self.out.write(rendered + "\n")
            self.out.flush()

    def render(self, line: FunctionLogLine) -> str | None:
        """The line as this view prints it, or None when it is hidden."""
        document = _json_object(line.text)
        if document is not None and _is_metrics_blob(document) and not self.show_metrics:
            return None
        if self.log_format == "json":
            return line.text if document is not None else _wrapped(line)
        if document is None:
            body = _runtime_line_body(line.text)
        elif _is_metrics_blob(document):
            body = _metrics_body(document)
        elif "message" in document and "level" in document:
            body = _event_body(document)
        else:  # some other JSON the function printed
            body = line.text
        if body is None:
            return None
        return f"{_clock(line.time)} {line.logical_id} {_short_request_id(line.request_id)} {body}"


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _is_metrics_blob(document: dict[str, Any]) -> bool:
    aws = document.get("_aws")
    return isinstance(aws, dict) and "CloudWatchMetrics" in aws


def _wrapped(line: FunctionLogLine) -> str:
    return json.dumps(
        {
            "function": line.logical_id,
            "requestId": line.request_id,
            "stream": line.stream,
            "message": line.text,
        }
    )


def _runtime_line_body(text: str) -> str | None:
    """A plain line in text format: START/END hidden, REPORT shortened (cold starts only), the rest as-is."""
    timeout = _TIMEOUT.search(text)
    if timeout is not None:
        return timeout.group(0)  # the runtime's own prefix repeats the time and request id
    runtime = _RUNTIME_LINE.match(text)
    if runtime is None:
        return text
    if runtime.group(1) != "REPORT":
        return None
    fields = dict(_REPORT_FIELD.findall(text))
    if "Init Duration" not in fields:
        return None
    parts = [f"init {fields['Init Duration']}"]
    if "Duration" in fields:
        parts.append(f"duration {fields['Duration']}")
    if "Max Memory Used" in fields:
        memory = fields["Max Memory Used"]
        if "Memory Size" in fields:
            memory = f"{memory.removesuffix(' MB')} of {fields['Memory Size']}"
        parts.append(f"max memory {memory}")
    return "cold start: " + ", ".join(parts)


def _event_body(document: dict[str, Any]) -> str:
    """`[job=...] LEVEL message | exception's last line` for one Powertools log event."""
    parts = []
    job_id = next((document[key] for key in _JOB_ID_KEYS if document.get(key)), None)
    if job_id is not None:
        parts.append(f"job={job_id}")
    parts.append(str(document["level"]))
    message = document["message"]
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    parts.append(text.replace("\n", "\\n"))  # one event, one line
    exception = document.get("exception")
    if exception:
        last = [line for line in str(exception).splitlines() if line.strip()]
        if last:
            parts.append(f"| {last[-1].strip()}")
    return " ".join(parts)


def _metrics_body(document: dict[str, Any]) -> str:
    """`metrics JobsCompleted=1 Count, ...` for one EMF blob (shown only with show_metrics)."""
    described = []
    for directive in document["_aws"].get("CloudWatchMetrics") or []:
        for metric in directive.get("Metrics") or []:
            name = metric.get("Name")
            value = document.get(name)
            values = value if isinstance(value, list) else [value]
            shown = ",".join(f"{v:g}" if isinstance(v, int | float) else str(v) for v in values)
            described.append(f"{name}={shown} {metric.get('Unit', '')}".rstrip())
    return "metrics " + ", ".join(described)


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]


def _short_request_id(request_id: str | None) -> str:
    return (request_id or "init")[:_SHORT_REQUEST_ID].ljust(_SHORT_REQUEST_ID)
