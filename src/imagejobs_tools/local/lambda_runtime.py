"""The runtime inside one local Lambda execution environment (a worker process).

The worker pool (`workers.py`) starts this file as a script, in a process of its
own whose environment is exactly the function's (template variables plus what
the Lambda service sets), with `LAMBDA_TASK_ROOT` as the code directory. Like
the Lambda runtime interface client it imports the handler once (init), then
serves one invocation at a time over a connection inherited as a file
descriptor, forever. Only the standard library is imported before the handler,
so the function's cold start is its own.

Messages are JSON: the pool sends `init` (plugins to run after the handler's
import: test tooling such as fault injection, the local twin of
`AWS_LAMBDA_EXEC_WRAPPER`), then `invoke`s; the runtime answers `ready` or
`init_error`, then one `result` or `error` per invocation. Around each
invocation it writes marker lines to stdout and stderr, so the pool tells which
request every log line belongs to.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

# Lines that start with this byte are markers for the pool, never log output.
MARKER = "\x00imagejobs-runtime"


class LambdaContext:
    """What the Lambda Python runtime passes as `context` (the attributes handlers and Powertools read)."""

    def __init__(self, request_id: str, function_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # The real runtime passes the variable's text, not an int.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The body Lambda returns for an unhandled exception (Step Functions matches errorType)."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def mark(kind: str, request_id: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.write(f"{MARKER} {kind} {request_id}\n")
        stream.flush()


def load_handler(handler: str, plugins: list[list[Any]]) -> Any:
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    for target, options in plugins:
        plugin_module, _, plugin_name = str(target).partition(":")
        getattr(importlib.import_module(plugin_module), plugin_name)(module, options)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise AttributeError(f"Handler '{attribute}' missing on module '{module_name}'")
    return function


def invoke(handler: Any, event: str, context: LambdaContext) -> dict[str, str]:
    try:
        result = handler(json.loads(event), context)
    except Exception as exc:
        # As the Lambda runtime does: the error is logged, then returned as the invocation's result.
        print(f"[ERROR] {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()
        return {"type": "error", "payload": json.dumps(error_payload(exc))}
    try:
        return {"type": "result", "payload": json.dumps(result)}
    except (TypeError, ValueError) as exc:
        marshal = {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError"}
        return {"type": "error", "payload": json.dumps(marshal)}


def serve(connection: Connection) -> None:
    setup = json.loads(connection.recv_bytes())
    started = time.perf_counter()
    try:
        handler = load_handler(os.environ["_HANDLER"], setup.get("plugins", []))
    except Exception as exc:
        traceback.print_exc()
        connection.send_bytes(json.dumps({"type": "init_error", "error": error_payload(exc)}).encode())
        return
    init_seconds = time.perf_counter() - started
    connection.send_bytes(json.dumps({"type": "ready", "initSeconds": init_seconds}).encode())
    while True:
        try:
            message = json.loads(connection.recv_bytes())
        except EOFError:  # the pool closed the connection: the environment is shut down
            return
        request_id = message["requestId"]
        context = LambdaContext(request_id, message["functionArn"], message["deadlineMs"])
        mark("start", request_id)
        reply = invoke(handler, message["event"], context)
        mark("end", request_id)
        connection.send_bytes(json.dumps(reply).encode())


def main() -> None:
    # A script's own folder is sys.path[0]; a Lambda function's is its code directory.
    sys.path[0] = os.environ["LAMBDA_TASK_ROOT"]
    os.chdir(os.environ["LAMBDA_TASK_ROOT"])
    serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
