"""Capture what the handlers log (the Powertools handler's stream), to grep it for secrets."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _Tee(io.TextIOBase):
    def __init__(self, *streams: TextIO) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


@contextmanager
def captured_logs(echo: TextIO | None = None, level: int | None = logging.DEBUG) -> Iterator[io.StringIO]:
    """Everything the shared `imagejobs` logger writes, as Lambda would ship it to CloudWatch.

    ``level`` (default DEBUG) widens the net: a secret logged only at DEBUG still counts.
    """
    from imagejobs.observability import logger

    handler: Any = logger.registered_handler
    buffer = io.StringIO()
    previous_stream = handler.setStream(_Tee(buffer, echo) if echo else buffer)
    previous_level = logger.log_level
    if level is not None:
        logger.setLevel(level)
    try:
        yield buffer
    finally:
        handler.setStream(previous_stream)
        logger.setLevel(previous_level)


def find_secret(haystacks: dict[str, str], secret: str) -> list[str]:
    """Names of the texts that contain ``secret`` (or its distinctive tail)."""
    needles = {secret, secret[-12:]}
    return [name for name, text in haystacks.items() if any(n in text for n in needles)]
