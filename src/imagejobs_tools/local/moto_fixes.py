"""Fixes for moto bugs the local stack runs into; `install()` applies them and returns the undo.

- moto 5.2.5's Step Functions `arn:aws:states:::states:startExecution` integration passes the
  ASL's parameter names (`StateMachineArn`, `Name`, `Input`: AWS's spelling in a state machine)
  to botocore unchanged, whose Step Functions model spells every member in camelCase
  (`stateMachineArn`, ...): the call fails with KeyError 'StateMachineArn'. AWS maps the names
  itself, so the EXPRESS hand-over (statemachine/job.asl.json, HandOver) needs this locally.

- moto 5.2.5's SQS `Queue.pending_message_groups` iterates the live set of in-flight messages
  while other server threads add to it: under load ReceiveMessage then fails with HTTP 500
  "Set changed size during iteration", and the messages that receive had picked count one extra
  receive toward maxReceiveCount. The fix iterates over a snapshot (`tuple(set)` copies in C,
  under the GIL, without running Python code).

The hook is private moto API (moto is pinned): `check()` says clearly when it has moved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

SFN_SERVICE_MODULE = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn"
)
SFN_SERVICE_CLASS = "StateTaskServiceSfn"
PATCHED_METHOD = "_normalise_parameters"
# Marks our wrapper, so a second install() does not wrap it again.
_MARKER = "_imagejobs_camel_case_parameters"
_LOCK = threading.Lock()


class MotoFixError(RuntimeError):
    """moto's private API no longer has what a fix patches (a moto upgrade moved it)."""


def camel_case_parameters(parameters: dict[str, Any]) -> None:
    """Rename the top-level `PascalCase` keys to botocore's `camelCase`, in place (as AWS does)."""
    for key in [k for k in parameters if k[:1].isupper()]:
        parameters[key[0].lower() + key[1:]] = parameters.pop(key)


def _service_class() -> Any:
    import importlib

    try:
        module = importlib.import_module(SFN_SERVICE_MODULE)
        service = getattr(module, SFN_SERVICE_CLASS)
        getattr(service, PATCHED_METHOD)
    except (ImportError, AttributeError) as error:
        raise MotoFixError(
            f"moto moved {SFN_SERVICE_MODULE}.{SFN_SERVICE_CLASS}.{PATCHED_METHOD} "
            f"(the states:startExecution parameter-name fix needs it): {error}"
        ) from error
    return service


def check() -> None:
    """Raise MotoFixError if a fix can no longer be applied to the installed moto."""
    _service_class()
    _sqs_queue_class()


def _sqs_queue_class() -> Any:
    from moto.sqs import models

    queue = getattr(models, "Queue", None)
    if not isinstance(getattr(queue, "pending_message_groups", None), property) or not hasattr(
        queue, "pending_messages"
    ):
        raise MotoFixError(
            "moto moved moto.sqs.models.Queue.pending_message_groups (the SQS race fix needs it)"
        )
    return queue


def _sqs_pending_message_groups() -> Callable[[], None]:
    queue = _sqs_queue_class()
    with _LOCK:
        own = queue.__dict__["pending_message_groups"]
        if getattr(own.fget, _MARKER, False):
            return lambda: None

        def pending_message_groups(self: Any) -> set[str]:
            return {m.group_id for m in tuple(self._pending_messages) if m.group_id is not None}

        setattr(pending_message_groups, _MARKER, True)
        fixed = property(pending_message_groups)
        queue.pending_message_groups = fixed

    def restore() -> None:
        with _LOCK:
            if queue.__dict__.get("pending_message_groups") is fixed:
                queue.pending_message_groups = own

    return restore


def install() -> Callable[[], None]:
    """Apply every fix; the returned callable removes them again (call it once)."""
    undo = [_sfn_parameter_names(), _sqs_pending_message_groups()]

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


def _sfn_parameter_names() -> Callable[[], None]:
    service = _service_class()
    with _LOCK:
        own = service.__dict__.get(PATCHED_METHOD)
        if getattr(own, _MARKER, False):
            return lambda: None  # already fixed by an earlier install(), whose undo removes it
        original = getattr(service, PATCHED_METHOD)  # its own override, or the inherited one

        def normalise(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            original(self, parameters, *args, **kwargs)
            camel_case_parameters(parameters)

        setattr(normalise, _MARKER, True)
        setattr(service, PATCHED_METHOD, normalise)

    def restore() -> None:
        with _LOCK:
            if service.__dict__.get(PATCHED_METHOD) is normalise:
                if own is None:
                    delattr(service, PATCHED_METHOD)
                else:
                    setattr(service, PATCHED_METHOD, own)

    return restore
