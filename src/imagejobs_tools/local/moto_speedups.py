"""Speed-ups for moto hot spots the local stack hits under load; same answers, less CPU.

Found with `py-spy record --gil` over `bench/throughput.py` (docs/performance.md):

- SQS ReceiveMessage checks each candidate message's retention period by calling
  `get_queue_attributes(queue, ["MessageRetentionPeriod"])`, which computes *every* queue
  attribute, message counts included (a scan of the whole queue per message): with 1,000
  messages queued that was 15 % of the stack's CPU. The check reads the queue's retention
  period directly; the comparison is moto's own.
- SQS reads the clock for every message it looks at (visible? delayed?) through
  `moto.core.utils.unix_time`, which builds two datetimes (and runs an import statement)
  per call: with 1,000 messages queued, ~6 % of the CPU. The queue code gets `time.time()`
  based versions (same value: seconds since the epoch; a given datetime still goes to moto's).
- The Step Functions interpreter parses every JSONPath (`$.poll.status`, ...) with
  jsonpath_ng, which builds a new yacc parser for each parse: 6 % of the CPU. Parsed paths
  are immutable, so each distinct path is parsed once (bounded cache).

`install()` applies them and returns the undo. The hooks are private moto API (moto is
pinned exactly): `check()` says clearly when one has moved.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

from imagejobs_tools.local.moto_fixes import sqs_backend_class
from imagejobs_tools.local.patching import MotoFixError, Patch, Undo, apply_all

# Modules of moto's interpreter that bind jsonpath_ng's `parse` at import time.
JSONPATH_MODULES = (
    "moto.stepfunctions.parser.asl.utils.json_path",
    "moto.stepfunctions.parser.asl.component.common.path.result_path",
)
JSONPATH_CACHE_SIZE = 4096
_MARKER = "_imagejobs_speedup"
_LOCK = threading.Lock()


def _jsonpath_modules() -> list[Any]:
    modules = []
    for name in JSONPATH_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise MotoFixError(f"moto moved {name} (the JSONPath speed-up needs it): {error}") from error
        if not callable(getattr(module, "parse", None)):
            raise MotoFixError(f"moto's {name} no longer binds jsonpath_ng's parse")
        modules.append(module)
    return modules


CLOCK_NAMES = ("unix_time", "unix_time_millis")


def _sqs_models() -> Any:
    from moto.sqs import models

    if not all(callable(getattr(models, name, None)) for name in CLOCK_NAMES):
        raise MotoFixError("moto.sqs.models no longer imports unix_time, unix_time_millis (clock speed-up)")
    return models


def check() -> None:
    """Raise MotoFixError if a speed-up can no longer be applied to the installed moto."""
    sqs_backend_class()
    _sqs_models()
    _jsonpath_modules()


def retention_period_seconds(queue: Any) -> int:
    """The queue's MessageRetentionPeriod, as moto's `Queue.attributes` would report it."""
    return int(queue.message_retention_period)


def _sqs_retention_check() -> Callable[[], None]:
    backend = sqs_backend_class()
    with _LOCK:
        own = backend.__dict__["is_message_valid_based_on_retention_period"]
        if getattr(own, _MARKER, False):
            return lambda: None

        def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
            queue = self.get_queue(queue_name)
            retain_until = retention_period_seconds(queue) + message.sent_timestamp / 1000
            return bool(retain_until > time.time())

        setattr(is_message_valid_based_on_retention_period, _MARKER, True)
        backend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period

    def restore() -> None:
        with _LOCK:
            if getattr(backend.__dict__["is_message_valid_based_on_retention_period"], _MARKER, False):
                backend.is_message_valid_based_on_retention_period = own

    return restore


def fast_unix_time(dt: Any = None) -> float:
    """moto's `unix_time()`: seconds since the epoch (UTC), from `time.time()` when no datetime is given."""
    if dt is None:
        return time.time()
    from moto.core.utils import unix_time

    return float(unix_time(dt))


setattr(fast_unix_time, _MARKER, True)  # how a second install() sees the clock is already fast


def fast_unix_time_millis(dt: Any = None) -> float:
    return fast_unix_time(dt) * 1000.0


def _sqs_clock() -> Callable[[], None]:
    models = _sqs_models()
    with _LOCK:
        originals = {name: getattr(models, name) for name in CLOCK_NAMES}
        if getattr(originals["unix_time"], _MARKER, False):
            return lambda: None
        models.unix_time = fast_unix_time
        models.unix_time_millis = fast_unix_time_millis

    def restore() -> None:
        with _LOCK:
            for name, value in originals.items():
                setattr(models, name, value)

    return restore


def _jsonpath_parse_cache() -> Callable[[], None]:
    modules = _jsonpath_modules()
    originals: list[tuple[Any, Any]] = []
    with _LOCK:
        for module in modules:
            parse = module.parse
            if getattr(parse, _MARKER, False):
                continue
            cached = functools.lru_cache(maxsize=JSONPATH_CACHE_SIZE)(parse)
            setattr(cached, _MARKER, True)
            module.parse = cached
            originals.append((module, parse))

    def restore() -> None:
        with _LOCK:
            for module, parse in originals:
                module.parse = parse

    return restore


SPEEDUPS: tuple[Patch, ...] = (_sqs_retention_check, _sqs_clock, _jsonpath_parse_cache)


def install() -> Undo:
    """Apply every speed-up; the returned callable removes them again (call it once)."""
    return apply_all(SPEEDUPS)
