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

- moto 5.2.5's SQS loses messages under concurrency. `Queue.delete_message` rebuilds the queue's
  message list (every message but the deleted one) and assigns it, without the lock `add_message`
  appends under. Two deletes running at once both copy the same list; a message sent after the
  first assignment goes into the first copy, and the second assignment drops it: the message is
  gone, never delivered, not in the DLQ (and the first delete's message comes back). The
  10,000-job soak lost 9 jobs this way: the last 7 messages of one SendMessageBatch and 2 in the
  middle of another, sent while the intake's pollers were deleting. ReceiveMessage's move to the
  DLQ removes from the same list unlocked, and an in-flight set that two threads update checks
  then removes. SQS never drops a message it accepted, and "no job is lost" rests on that. The
  fix runs `Queue.delete_message` and the backend's receive, change-visibility and purge under
  the queue's own lock.

- moto 5.2.5's DynamoDB takes no lock: `UpdateItem` checks its ConditionExpression, then spends
  milliseconds validating and applying the update expression to the stored item in place, so two
  concurrent conditional updates of one item can both pass the check and both succeed (measured:
  more than one winner among 8 in about 1 round in 10; docs/local-stack.md has the reproduction).
  On AWS a conditional write is atomic, and "submitted once" rests on it. The fix runs every
  item-level DynamoDB request (writes, and reads, which would otherwise see an update half
  applied) under one lock, at moto's request handler: the handler reads the old item for
  `ReturnValues` before it calls the backend, and the Step Functions engine's own
  `dynamodb:updateItem` tasks come in through the same handler.

- moto 5.2.5's Step Functions `StartExecution` looks for a running execution of that name, then
  deep-copies the state machine and builds the new execution before it files it: two concurrent
  starts with one name can both create (and run) an execution, where AWS keeps names unique (the
  pipeline names each job's loop after the job, so a duplicate delivery never starts a second
  loop). Measured: 1 round in 200 of 8 concurrent starts. The fix runs StartExecution under a lock.

- moto 5.2.5's Step Functions `states:startExecution` integration turns any exception that is not
  a botocore `ClientError` (a connection reset or refused, a read timeout: botocore's own
  `BotoCoreError`s) into `States.Runtime`, which no Retry or Catch can match: the execution fails
  at once. AWS reports a failed call of a service integration as a Task failure its Retry/Catch
  see (`StepFunctions.SdkClientException`, as `Lambda.SdkClientException` for Lambda); the job's
  hand-over (statemachine/job.asl.json, HandOver) rests on catching it, or the job is left without
  a loop. The fix reports those as `StepFunctions.SdkClientException` Task failures.

- moto 5.2.5's `AWS::Events::EventBus` has no physical resource id, so its CloudFormation `Ref`
  resolves to the model object itself (a function's environment naming the bus then fails to
  serialize: HTTP 500 on every Lambda call). AWS documents `Ref` of an event bus as its name. The
  fix gives the model a `physical_resource_id`: its name.

- moto 5.2.5's DynamoDB `TransactWriteItems` backs up every table it names with a deep copy
  before it writes (once per item: twice for our two-item transactions), and rolls a cancelled
  transaction back by putting the copies in the tables' places. Two bugs:
  - the copy costs the whole table: every item and every stream record since the table was made.
    With 1,000 jobs done (about 10,000 stream records) one batch count took about a second, under
    the lock every DynamoDB request takes (the fix above), so JobEventsFunction timed out on its
    stream batches of 100 and their records went to the DLQ: a 1,000-line batch never completed.
    On AWS a transaction's cost does not depend on the table's size;
  - the copy includes the stream shard: the shard iterators already handed out (the DynamoDB
    Streams event source's) keep reading the old shard, which no write reaches any more: after the
    first cancelled transaction (a budget claim over budget, a batch count delivered twice) the
    change stream looks empty for good. On AWS a cancelled transaction changes nothing.
  The fix copies only the items the transaction names (before it runs) and, on a rollback, puts
  those back into the same table, and drops the stream records the cancelled transaction added.

The hook is private moto API (moto is pinned): `check()` says clearly when it has moved.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from imagejobs_tools.local.patching import MotoFixError, Patch, Undo, apply_all, moto_class

SFN_SERVICE_MODULE = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn"
)
SFN_SERVICE_CLASS = "StateTaskServiceSfn"
PATCHED_METHOD = "_normalise_parameters"
ERROR_METHOD = "_from_error"
# What a Step Functions task reports when its call of the Step Functions API got no response.
SFN_CLIENT_ERROR = "StepFunctions.SdkClientException"
# Marks our wrapper, so a second install() does not wrap it again.
_MARKER = "_imagejobs_camel_case_parameters"
_LOCK = threading.Lock()


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
        service.__dict__[ERROR_METHOD]  # its own override, which the SDK-error fix wraps
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
    sqs_backend_class()
    _dynamodb_handler_class()
    _sfn_parser_backend_class()
    _event_bus_class()
    _dynamodb_backend_class()


# Every DynamoDB request that reads or writes items; table-level calls need no lock.
DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "batch_write_item",
    "transact_write_items",
    "get_item",
    "batch_get_item",
    "query",
    "scan",
    "transact_get_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)
# One lock for all tables: moto's backends are process-wide, and a transaction spans tables.
DYNAMODB_ITEM_LOCK = threading.RLock()


def _dynamodb_handler_class() -> Any:
    return moto_class(
        "moto.dynamodb.responses",
        "DynamoHandler",
        DYNAMODB_ITEM_OPERATIONS,
        "the atomic conditional-write fix",
    )


def _sqs_queue_class() -> Any:
    from moto.sqs import models

    queue = getattr(models, "Queue", None)
    if (
        not isinstance(getattr(queue, "pending_message_groups", None), property)
        or not hasattr(queue, "pending_messages")
        or not callable(getattr(queue, "delete_message", None))
    ):
        raise MotoFixError(
            "moto moved moto.sqs.models.Queue.pending_message_groups or delete_message (the SQS race "
            "fixes need them)"
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


def _serialise(
    owner: Any, names: tuple[str, ...], lock: threading.RLock | Callable[..., AbstractContextManager[Any]]
) -> Callable[[], None]:
    """Run each named method of ``owner`` under ``lock``, or under the lock ``lock(*args, **kwargs)``
    picks for each call (a queue's own); the returned callable undoes it."""
    with _LOCK:
        if getattr(owner.__dict__.get(names[0]), _MARKER, False):
            return lambda: None  # already serialised by an earlier install(), whose undo removes it
        originals = {name: owner.__dict__[name] for name in names}

        def serialised(operation: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(operation)
            def locked(*args: Any, **kwargs: Any) -> Any:
                with lock(*args, **kwargs) if callable(lock) else lock:
                    return operation(*args, **kwargs)

            setattr(locked, _MARKER, True)
            return locked

        patched = {name: serialised(original) for name, original in originals.items()}
        for name, wrapper in patched.items():
            setattr(owner, name, wrapper)

    def restore() -> None:
        with _LOCK:
            for name, wrapper in patched.items():
                if owner.__dict__.get(name) is wrapper:
                    setattr(owner, name, originals[name])

    return restore


# SQSBackend calls that change which messages a queue holds (receive moves some to the DLQ), or its
# in-flight set; each runs under the queue's own lock, the one moto's `Queue.add_message` appends under.
SQS_QUEUE_OPERATIONS = ("receive_message", "change_message_visibility", "purge_queue")
# What the SQS patches (these fixes, and moto_speedups' retention check) use of moto's SQSBackend.
SQS_BACKEND_METHODS = (*SQS_QUEUE_OPERATIONS, "get_queue", "is_message_valid_based_on_retention_period")


def sqs_backend_class() -> Any:
    return moto_class("moto.sqs.models", "SQSBackend", SQS_BACKEND_METHODS, "the SQS fixes and speed-ups")


def _queue_lock(backend: Any, *args: Any, **kwargs: Any) -> Any:
    """The lock of the queue an SQSBackend call names (moto passes queue_name by position or name)."""
    queue_name = kwargs["queue_name"] if "queue_name" in kwargs else args[0]
    return backend.get_queue(queue_name)._messages_lock


def _message_lock(queue: Any, *_: Any, **__: Any) -> Any:
    return queue._messages_lock


# The queue's lock is a Condition over an RLock: a long-polling receive that waits inside
# (`Queue.wait_for_messages`) releases it fully, so senders are not held up by a waiting receive.
def _sqs_deletes_under_lock() -> Undo:
    return _serialise(_sqs_queue_class(), ("delete_message",), _message_lock)


def _sqs_queue_operations_under_lock() -> Undo:
    return _serialise(sqs_backend_class(), SQS_QUEUE_OPERATIONS, _queue_lock)


def _dynamodb_atomic_item_operations() -> Callable[[], None]:
    return _serialise(_dynamodb_handler_class(), DYNAMODB_ITEM_OPERATIONS, DYNAMODB_ITEM_LOCK)


START_EXECUTION_LOCK = threading.RLock()


def _sfn_parser_backend_class() -> Any:
    from moto.stepfunctions.parser import models

    backend = getattr(models, "StepFunctionsParserBackend", None)
    if backend is None or not callable(backend.__dict__.get("start_execution")):
        raise MotoFixError(
            "moto moved moto.stepfunctions.parser.models.StepFunctionsParserBackend.start_execution "
            "(the execution-name uniqueness fix needs it)"
        )
    return backend


def _sfn_unique_execution_names() -> Callable[[], None]:
    return _serialise(_sfn_parser_backend_class(), ("start_execution",), START_EXECUTION_LOCK)


def install() -> Undo:
    """Apply every fix; the returned callable removes them again (call it once)."""
    return apply_all(FIXES)


def _event_bus_class() -> Any:
    return moto_class(
        "moto.events.models", "EventBus", ("create_from_cloudformation_json",), "the event bus Ref fix"
    )


def _event_bus_ref() -> Callable[[], None]:
    bus = _event_bus_class()
    with _LOCK:
        if "physical_resource_id" in bus.__dict__:
            return lambda: None  # moto has its own now, or an earlier install() added ours

        def physical_resource_id(self: Any) -> str:
            return str(self.name)

        bus.physical_resource_id = property(physical_resource_id)

    def restore() -> None:
        with _LOCK:
            if "physical_resource_id" in bus.__dict__:
                delattr(bus, "physical_resource_id")

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


def _sfn_sdk_client_errors() -> Callable[[], None]:
    from botocore.exceptions import BotoCoreError
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    service = _service_class()
    with _LOCK:
        own = service.__dict__[ERROR_METHOD]
        if getattr(own, _MARKER, False):
            return lambda: None  # already fixed by an earlier install(), whose undo removes it

        def from_error(self: Any, env: Any, ex: Exception) -> Any:
            if not isinstance(ex, BotoCoreError):
                return own(self, env, ex)
            details = TaskFailedEventDetails(
                error=SFN_CLIENT_ERROR,
                cause=f"Unable to execute HTTP request: {ex}",
                resource=self._get_sfn_resource(),
                resourceType=self._get_sfn_resource_type(),
            )
            return FailureEvent(
                env=env,
                error_name=CustomErrorName(SFN_CLIENT_ERROR),
                event_type=HistoryEventType.TaskFailed,
                # moto declares EventDetails total but fills one key, as here.
                event_details=EventDetails(taskFailedEventDetails=details),  # type: ignore[typeddict-item]
            )

        setattr(from_error, _MARKER, True)
        setattr(service, ERROR_METHOD, from_error)

    def restore() -> None:
        with _LOCK:
            if service.__dict__.get(ERROR_METHOD) is from_error:
                setattr(service, ERROR_METHOD, own)

    return restore


def _dynamodb_backend_class() -> Any:
    return moto_class(
        "moto.dynamodb.models", "DynamoDBBackend", ("transact_write_items",), "the transaction rollback fix"
    )


class _Untouched:
    """What moto's TransactWriteItems gets instead of a deep copy of a table (see _TableCopies):
    on a rollback moto puts it in the table's place, and the wrapper puts the table back."""

    def __init__(self, table: Any) -> None:
        self.table = table


class _TableCopies:
    """moto's DynamoDB models module's ``copy``: the same module, except that a deep copy of a
    whole Table (moto's transaction backup) is not made."""

    def __init__(self, module: Any, table_class: type) -> None:
        self._module = module
        self._table_class = table_class

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_class):
            return _Untouched(value)
        return self._module.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
    """(table, hash key, range key, a copy of the item or None) for each item a transaction names."""
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType

    touched = []
    for entry in transact_items:
        for op_type, op in entry.items():
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            if table is None:
                continue
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            try:
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                current = table.get_item(hash_key, range_key)
            except Exception:  # a malformed request: moto refuses it before writing anything
                continue
            touched.append((table, hash_key, range_key, copy.deepcopy(current)))
    return touched


def _put_back(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    holder = table.items[hash_key] if range_key is not None else table.items
    slot = range_key if range_key is not None else hash_key
    if item is None:
        holder.pop(slot, None)
    else:
        holder[slot] = item


def _dynamodb_transactions_roll_back_in_place() -> Callable[[], None]:
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend = _dynamodb_backend_class()
    original = backend.transact_write_items
    if getattr(original, _MARKER, False):
        return lambda: None
    own_copy = models.copy

    @functools.wraps(original)
    def transact_write_items(
        self: Any, transact_items: list[dict[str, Any]], *args: Any, **kwargs: Any
    ) -> Any:
        touched = _touched_items(self, transact_items)
        streams = {
            id(table): (table.stream_shard, len(table.stream_shard.items))
            for table, *_ in touched
            if table.stream_shard is not None
        }
        try:
            return original(self, transact_items, *args, **kwargs)
        finally:
            rolled_back = [name for name, table in self.tables.items() if isinstance(table, _Untouched)]
            for name in rolled_back:
                self.tables[name] = self.tables[name].table
            if rolled_back:
                for table, hash_key, range_key, item in reversed(touched):
                    _put_back(table, hash_key, range_key, item)
                for shard, length in streams.values():
                    del shard.items[length:]  # the cancelled transaction's changes never happened

    setattr(transact_write_items, _MARKER, True)
    models.copy = _TableCopies(own_copy, Table)  # type: ignore[assignment]
    backend.transact_write_items = transact_write_items

    def restore() -> None:
        backend.transact_write_items = original
        models.copy = own_copy

    return restore


# Every fix, in the order applied (the module's docstring says what each one fixes).
FIXES: tuple[Patch, ...] = (
    _sfn_parameter_names,
    _sfn_sdk_client_errors,
    _sqs_pending_message_groups,
    _sqs_deletes_under_lock,
    _sqs_queue_operations_under_lock,
    _dynamodb_atomic_item_operations,
    _sfn_unique_execution_names,
    _event_bus_ref,
    _dynamodb_transactions_roll_back_in_place,
)
