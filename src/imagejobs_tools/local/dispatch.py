"""In-process Lambda: every invocation moto makes is dispatched to the real handler.

moto runs Lambda code in Docker. Every path it uses (the Invoke API, Step
Functions Task states, its S3/SNS triggers) goes through one private method,
`moto.awslambda.models.LambdaFunction._invoke_lambda(self, event)`, which
returns `(payload_json, errored, logs)`. `LambdaDispatcher.install()` replaces
it; `uninstall()` restores it. The hook is private moto API (moto is pinned
exactly); `tests/integration/local/test_dispatch.py` is its smoke test.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from imagejobs_tools.local.template import FunctionSource

LOG = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Any]
InvokeResult = tuple[str, bool, str]


@dataclass(frozen=True)
class InvocationRecord:
    """One finished in-process invocation, as observers see it (benchmarks, tooling)."""

    function_name: str  # physical name
    logical_id: str  # template logical id, e.g. PollFunction ("" for an unknown function)
    started: float  # time.time() when the handler was called
    seconds: float  # wall duration
    event: Any  # the parsed event the handler got
    errored: bool


InvocationObserver = Callable[[InvocationRecord], None]


class DispatchError(RuntimeError):
    """A function cannot be dispatched (unknown name, handler not loadable)."""


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


@dataclass(frozen=True)
class LoadedFunction:
    name: str  # physical function name, as moto knows it
    arn: str
    source: FunctionSource
    handler: Handler
    memory_mb: int
    timeout_seconds: int


def module_name_for(code_dir: Path) -> str:
    """`imagejobs_fn_<dir>`: every handler module is `app.py`, so each gets a distinct name."""
    return "imagejobs_fn_" + re.sub(r"\W", "_", code_dir.name)


def lambda_error_payload(exc: BaseException) -> dict[str, Any]:
    """What the Lambda runtime returns for an unhandled exception (Step Functions matches errorType)."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


class LambdaDispatcher:
    """Maps moto function names to handler callables loaded from this checkout."""

    def __init__(self) -> None:
        self._functions: dict[str, LoadedFunction] = {}
        self._modules: dict[Path, ModuleType] = {}
        self._replaced_modules: dict[str, ModuleType | None] = {}
        self._load_lock = threading.Lock()
        self._original_invoke: Any = None
        self._original_client_factory: Any = None
        self._original_entrypoint: Any = None
        self.invocations = 0  # total calls dispatched (for figures/tests)
        self._count_lock = threading.Lock()
        self._observers: tuple[InvocationObserver, ...] = ()

    # -- loading ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        arn: str,
        source: FunctionSource,
        *,
        memory_mb: int,
        timeout_seconds: int,
        environ_extra: dict[str, str],
    ) -> LoadedFunction:
        """Load the handler module once, with the function's own variables set while it imports."""
        with (
            self._load_lock,
            _environ_overlay(
                {
                    **environ_extra,
                    "AWS_LAMBDA_FUNCTION_NAME": name,
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
                    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                    "_HANDLER": source.handler,
                }
            ),
        ):
            module = self._modules.get(source.module_file) or self._load_module(source)
        handler = getattr(module, source.handler_attribute, None)
        if not callable(handler):
            raise DispatchError(
                f"{source.logical_id}.Handler: {source.handler} is not a callable in {module}"
            )
        loaded = LoadedFunction(name, arn, source, handler, memory_mb, timeout_seconds)
        self._functions[name] = loaded
        return loaded

    def _load_module(self, source: FunctionSource) -> ModuleType:
        name = module_name_for(source.code_dir)
        taken = {m.__name__ for m in self._modules.values()}
        if name in taken:
            raise DispatchError(f"{source.logical_id}: two code directories map to module {name}")
        spec = importlib.util.spec_from_file_location(name, source.module_file)
        if spec is None or spec.loader is None:
            raise DispatchError(f"{source.logical_id}: cannot load {source.module_file}")
        module = importlib.util.module_from_spec(spec)
        self._replaced_modules.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DispatchError(
                f"{source.logical_id}: importing {source.module_file} failed: {exc!r}"
            ) from exc
        self._modules[source.module_file] = module
        return module

    @property
    def functions(self) -> dict[str, LoadedFunction]:
        return dict(self._functions)

    # -- observing -------------------------------------------------------------------------

    def add_observer(self, observer: InvocationObserver) -> Callable[[], None]:
        """Call `observer` after every invocation (on the invoking thread; keep it cheap and
        exception-free). Returns the callable that removes it."""
        with self._count_lock:
            self._observers = (*self._observers, observer)

        def remove() -> None:
            with self._count_lock:
                self._observers = tuple(o for o in self._observers if o is not observer)

        return remove

    # -- dispatching -----------------------------------------------------------------------

    def invoke(self, function_name: str, event: Any) -> InvokeResult:
        """Run one invocation; mirrors `_invoke_lambda`'s `(payload_json, errored, logs)`."""
        observers = self._observers
        if not observers:
            return self._invoke(function_name, event)[0]
        wall = time.time()
        started = time.perf_counter()
        result, parsed = self._invoke(function_name, event)
        function = self._functions.get(function_name)
        record = InvocationRecord(
            function_name=function_name,
            logical_id=function.source.logical_id if function is not None else "",
            started=wall,
            seconds=time.perf_counter() - started,
            event=parsed,
            errored=result[1],
        )
        for observer in observers:
            try:
                observer(record)
            except Exception:  # an observer must never change what the caller gets
                LOG.exception("invocation observer %r failed", observer)
        return result

    def _invoke(self, function_name: str, event: Any) -> tuple[InvokeResult, Any]:
        """The invocation's result and the parsed event."""
        function = self._functions.get(function_name)
        if function is None:
            error = DispatchError(f"function {function_name!r} is not part of the local stack")
            return (json.dumps(lambda_error_payload(error)), True, ""), event
        if event is None or event == "":
            event = {}
        elif isinstance(event, (str, bytes)):
            event = json.loads(event)
        context = LambdaContext(
            function_name=function.name,
            invoked_function_arn=function.arn,
            memory_limit_in_mb=function.memory_mb,
            timeout_seconds=function.timeout_seconds,
        )
        with self._count_lock:
            self.invocations += 1
        try:
            result = function.handler(event, context)
        except Exception as exc:
            LOG.warning("%s raised %s: %s", function.source.logical_id, type(exc).__name__, exc)
            return (json.dumps(lambda_error_payload(exc)), True, ""), event
        try:
            return (json.dumps(result), False, ""), event
        except (TypeError, ValueError) as exc:
            marshal = {
                "errorMessage": f"Unable to marshal response: {exc}",
                "errorType": "Runtime.MarshalError",
            }
            return (json.dumps(marshal), True, ""), event

    # -- moto hooks ------------------------------------------------------------------------

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        if self._original_invoke is not None:
            return
        dispatcher = self

        def _invoke_lambda(function: Any, event: Any = None) -> InvokeResult:
            return dispatcher.invoke(function.function_name, event)

        self._original_invoke = LambdaFunction.__dict__["_invoke_lambda"]
        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
        # The interpreter builds a new boto3 client for every Task; one per (region, service, port) is
        # enough (boto3 clients are thread-safe) and saves ~30% CPU per execution.
        self._original_client_factory = lambda_eval_utils.boto_client_for
        lambda_eval_utils.boto_client_for = _cached_client_factory(self._original_client_factory)
        # The interpreter re-parses the definition (ANTLR, pure Python) for every execution: ~10% of the
        # stack's CPU under load. The parse tree is reused; evaluation components stay fresh per execution.
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        self._original_entrypoint = ExecutionWorker.__dict__["_get_evaluation_entrypoint"]
        ExecutionWorker._get_evaluation_entrypoint = _cached_entrypoint()  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        from moto.awslambda.models import LambdaFunction
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        if self._original_invoke is not None:
            from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

            LambdaFunction._invoke_lambda = self._original_invoke  # type: ignore[method-assign]
            lambda_eval_utils.boto_client_for = self._original_client_factory
            ExecutionWorker._get_evaluation_entrypoint = self._original_entrypoint  # type: ignore[method-assign]
            self._original_invoke = self._original_client_factory = self._original_entrypoint = None
        for name, previous in self._replaced_modules.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        self._replaced_modules.clear()
        self._modules.clear()
        self._functions.clear()
        self._observers = ()


def _cached_entrypoint() -> Callable[[Any], Any]:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    trees: dict[str, Any] = {}
    lock = threading.Lock()

    def _get_evaluation_entrypoint(worker: Any) -> Any:
        definition = worker._evaluation_details.state_machine_details.definition
        with lock:
            tree = trees.get(definition)
        if tree is None:
            program, tree = AmazonStateLanguageParser.parse(definition)
            with lock:
                trees[definition] = tree
            return program
        return Preprocessor().visit(tree)

    return _get_evaluation_entrypoint


def _cached_client_factory(factory: Callable[..., Any]) -> Callable[..., Any]:
    from moto.settings import moto_server_port

    cache: dict[tuple[str, str, str], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service, moto_server_port())
        with lock:
            client = cache.get(key)
            if client is None:
                client = factory(region=region, service=service, state_credentials=state_credentials)
                if service == "lambda":
                    client = InProcessLambdaClient(client, region)
                cache[key] = client
        return client

    return boto_client_for


# Lambda's limit on a synchronous response payload (moto's Invoke API checks the same).
MAX_RESPONSE_PAYLOAD_BYTES = 6_000_000


class InProcessLambdaClient:
    """The Lambda client moto's Step Functions interpreter gets: `invoke` (synchronous) goes
    straight to moto's Lambda backend, in this process, instead of a loopback HTTP round trip
    into the same process (botocore serializing + werkzeug + routing, ~20 % of the stack's CPU
    under load). The backend resolves the function and runs `_invoke_lambda` (the dispatcher)
    exactly as the Invoke API does. Anything else, an unknown function included (so errors are
    botocore's ClientError, as the interpreter expects), goes to the real client over HTTP.
    """

    def __init__(self, client: Any, region: str) -> None:
        from moto.awslambda.models import lambda_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        self._client = client
        self._region = region
        self._backends = lambda_backends
        self._default_account = DEFAULT_ACCOUNT_ID

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def invoke(self, **parameters: Any) -> dict[str, Any]:
        name = str(parameters.get("FunctionName", ""))
        invocation_type = parameters.get("InvocationType", "RequestResponse")
        unsupported = set(parameters) - {"FunctionName", "Payload", "InvocationType", "Qualifier"}
        if invocation_type != "RequestResponse" or unsupported:
            return dict(self._client.invoke(**parameters))
        # arn:aws:lambda:<region>:<account>:function:<name>[:qualifier] names its own account.
        parts = name.split(":")
        account = parts[4] if name.startswith("arn:") and len(parts) > 4 else self._default_account
        backend = self._backends[account][self._region]
        qualifier = parameters.get("Qualifier")
        try:
            backend.get_function(name, qualifier)
        except Exception:  # unknown function or version: the real API's error, via HTTP
            return dict(self._client.invoke(**parameters))
        body = parameters.get("Payload") or b""
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        elif hasattr(body, "read"):
            body = body.read().decode("utf-8")
        response_headers: dict[str, str] = {}
        headers = {"x-amz-invocation-type": "RequestResponse"}
        payload = backend.invoke(name, qualifier, body, headers, response_headers)
        data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
        response: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
        if len(data) > MAX_RESPONSE_PAYLOAD_BYTES:
            limit = "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
            error = {"errorMessage": limit, "errorType": "Function.ResponseSizeTooLarge"}
            data = json.dumps(error).encode("utf-8")
            response["FunctionError"] = "Unhandled"
        elif "x-amz-function-error" in response_headers:
            response["FunctionError"] = response_headers["x-amz-function-error"]
        response["Payload"] = io.BytesIO(data)
        return response


@contextmanager
def _environ_overlay(values: dict[str, str]) -> Iterator[None]:
    import os

    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
