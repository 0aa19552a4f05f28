"""Local Lambda: every invocation moto makes goes to the function's execution environments.

moto runs Lambda code in Docker. Every path it uses (the Invoke API, Step
Functions Task states, its S3/SNS triggers) goes through one private method,
`moto.awslambda.models.LambdaFunction._invoke_lambda(self, event)`, which
returns `(payload_json, errored, logs)`. `LambdaDispatcher.install()` replaces
it with a call into the function's `WorkerPool` (workers.py: one process per
execution environment); `uninstall()` restores it and shuts the pools down.
The hook is private moto API (moto is pinned exactly);
`tests/integration/local/test_dispatch.py` is its smoke test.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from imagejobs_tools.local.aws_faults import AwsFaults
from imagejobs_tools.local.logview import FunctionLogLine
from imagejobs_tools.local.workers import (
    FunctionSpec,
    InvocationOutcome,
    LogSink,
    WorkerOptions,
    WorkerPool,
    service_error_payload,
)

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

LOG = logging.getLogger(__name__)

InvokeResult = tuple[str, bool, str]


@dataclass(frozen=True)
class InvocationRecord:
    """One finished invocation, as observers see it (benchmarks, tooling)."""

    function_name: str  # physical name
    logical_id: str  # template logical id, e.g. PollFunction ("" for an unknown function)
    started: float  # time.time() when the invocation was dispatched
    seconds: float  # wall duration, a cold start included
    event: Any  # the parsed event
    errored: bool


InvocationObserver = Callable[[InvocationRecord], None]


class ExecutionEnvironments(Protocol):
    """Where a function's invocations run: its `WorkerPool` (the default), or its warm container under
    `sam local start-lambda` (samlocal.SamLocalFunction)."""

    @property
    def spec(self) -> FunctionSpec: ...

    def invoke(self, event: str) -> InvocationOutcome: ...

    def close(self) -> None: ...


class DispatchError(RuntimeError):
    """A function cannot be dispatched (unknown name, bad registration)."""


def _discard(line: FunctionLogLine) -> None:
    return None


class LambdaDispatcher:
    """Maps moto function names to their pools of execution environments."""

    def __init__(
        self,
        options: WorkerOptions | None = None,
        log_sink: LogSink = _discard,
        faults: AwsFaults | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self.log_sink = log_sink
        # AWS faults for the Step Functions engine's in-process Lambda tasks (aws_faults.py).
        self.faults = faults
        self._pools: dict[str, ExecutionEnvironments] = {}
        self._original_invoke: Any = None
        self._original_client_factory: Any = None
        self._original_entrypoint: Any = None
        self.invocations = 0  # total calls dispatched (for figures/tests)
        self._count_lock = threading.Lock()
        self._observers: tuple[InvocationObserver, ...] = ()

    def register(self, spec: FunctionSpec, environments: ExecutionEnvironments | None = None) -> None:
        """Run the function's invocations in `environments`, by default a `WorkerPool` of its own."""
        if spec.name in self._pools:
            raise DispatchError(f"{spec.logical_id}: function {spec.name!r} is already registered")
        if not (spec.code_dir / (spec.handler.rpartition(".")[0].replace(".", "/") + ".py")).is_file():
            raise DispatchError(f"{spec.logical_id}.Handler: no module for {spec.handler} in {spec.code_dir}")
        self._pools[spec.name] = environments or WorkerPool(spec, self.options, self.log_sink)

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        return {name: pool.spec for name, pool in self._pools.items()}

    @property
    def pools(self) -> dict[str, WorkerPool]:
        """The functions that run in worker processes (all of them unless `local up --lambda sam`)."""
        return {name: pool for name, pool in self._pools.items() if isinstance(pool, WorkerPool)}

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
        wall = time.time()
        started = time.perf_counter()
        text = _event_text(event)
        payload, errored = self._invoke(function_name, text)
        if observers:
            pool = self._pools.get(function_name)
            record = InvocationRecord(
                function_name=function_name,
                logical_id=pool.spec.logical_id if pool is not None else "",
                started=wall,
                seconds=time.perf_counter() - started,
                event=json.loads(text),
                errored=errored,
            )
            for observer in observers:
                try:
                    observer(record)
                except Exception:  # an observer must never change what the caller gets
                    LOG.exception("invocation observer %r failed", observer)
        return payload, errored, ""

    def _invoke(self, function_name: str, event: str) -> tuple[str, bool]:
        pool = self._pools.get(function_name)
        if pool is None:
            error = service_error_payload(f"function {function_name!r} is not part of the local stack")
            return json.dumps(error), True
        with self._count_lock:
            self.invocations += 1
        return pool.invoke(event)

    def close(self) -> None:
        """Shut every execution environment down."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._observers = ()

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
        lambda_eval_utils.boto_client_for = _cached_client_factory(self._original_client_factory, self.faults)
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
        self.close()


def _event_text(event: Any) -> str:
    """moto hands the event over as text, bytes or (from some paths) an object; nothing means {}."""
    if event is None or event == "" or event == b"":
        return "{}"
    if isinstance(event, bytes):
        return event.decode("utf-8")
    if isinstance(event, str):
        return event
    return json.dumps(event)


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


def _cached_client_factory(factory: Callable[..., Any], faults: AwsFaults | None) -> Callable[..., Any]:
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
                    client = InProcessLambdaClient(client, region, faults)
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
    With `faults`, each in-process Invoke runs under the AWS fault plan (Lambda throttling and
    service errors, a response lost after the function ran), as the HTTP path does at the server.
    """

    def __init__(self, client: LambdaClient, region: str, faults: AwsFaults | None = None) -> None:
        from moto.awslambda.models import lambda_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        self._client = client
        self._region = region
        self._backends = lambda_backends
        self._default_account = DEFAULT_ACCOUNT_ID
        self._faults = faults

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
        if self._faults is not None:
            return self._faults.lambda_fault(lambda: self._invoke(backend, name, qualifier, parameters))
        return self._invoke(backend, name, qualifier, parameters)

    def _invoke(self, backend: Any, name: str, qualifier: Any, parameters: dict[str, Any]) -> dict[str, Any]:
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
