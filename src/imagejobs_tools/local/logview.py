"""What the local stack's functions write, one line at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionLogLine:
    logical_id: str  # template logical id, e.g. "PollFunction"
    function_name: str  # physical function name
    memory_mb: int
    request_id: str | None  # the invocation running when the line was written; None during init
    stream: str  # "stdout" or "stderr"
    text: str  # one line, without its trailing newline
    time: float  # time.time() when the line was read
