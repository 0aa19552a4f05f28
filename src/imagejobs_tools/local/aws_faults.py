"""AWS-side faults for the local stack: throttling, 5xx, resets after sending, added latency.

On AWS the services themselves fail: DynamoDB throttles (`ProvisionedThroughputExceededException`),
S3 answers `503 SlowDown`, Step Functions throttles `StartExecution`, SQS and Secrets Manager
answer 5xx, and a connection can drop after the service did the work. `AwsFaults` injects those,
per service and operation, into every call the pipeline makes, in the local stack only:

- **over HTTP** (`install()` wraps moto's WSGI entry point, `DomainDispatcherApplication.__call__`):
  the functions' calls (their worker processes sign with their roles' keys), the SQS pollers'
  receives and deletes (the event source mapping's own calls), and the Step Functions engine's
  `dynamodb:updateItem` and `states:startExecution` tasks (moto's interpreter signs with `ak`);
- **in process** (`lambda_fault()`, which `dispatch.InProcessLambdaClient` asks before every
  synchronous Invoke): the Step Functions engine's Lambda tasks, which never reach the server.

Calls signed with the stack's own `testing` key (the tooling's and the suites' clients, the pollers'
Invoke calls, the stack's set-up) are never faulted: they are the observer, not the pipeline. With
the IAM audit off the functions sign with that key too, so the faults need the audit on (the default).

Each fault is what the real service sends: the error code, HTTP status and body shape of its
protocol (JSON for DynamoDB, Step Functions, SQS, Secrets Manager; XML for S3), so botocore's retry
handler and Step Functions' Retry/Catch see AWS's errors. A reset happens after moto has done the
work: the socket is closed (RST) before the response is written, so the caller cannot tell whether
its write happened, which is the case every conditional write and every non-idempotent call must
survive. The in-process Lambda task gets `Lambda.SdkClientException` after the function ran.
"""

from __future__ import annotations

import io
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from imagejobs_tools.local.aws_calls import (
    SERVICE_MODEL_NAMES,
    dispatcher_class,
    request_signer,
    route_operation,
    take_body,
)

# The stack's own clients (tooling, suites, pollers' Invoke calls): never faulted.
OBSERVER_ACCESS_KEY = "testing"
# moto's Step Functions interpreter signs its tasks' calls with this key; counted apart.
ENGINE_ACCESS_KEY = "ak"
ENGINE = "Step Functions engine"
# Marks our wrapper, so a second install() does not wrap it again.
_MARKER = "_imagejobs_aws_faults"
_LOCK = threading.Lock()


class AwsFaultsError(RuntimeError):
    """The fault layer cannot be installed (already installed in this process)."""


THROTTLE = "throttle"
SERVER_ERROR = "server_error"
RESET = "reset_after_send"
KINDS = (THROTTLE, SERVER_ERROR, RESET)


@dataclass(frozen=True)
class FaultRule:
    """Faults for one service's operation (`*` matches any): each kind's probability per call, and
    latency added before the call (uniform in `latency_seconds`). The first matching rule wins."""

    service: str = "*"  # SigV4 signing name: dynamodb, s3, sqs, states, secretsmanager, lambda
    operation: str = "*"  # boto3's name, e.g. UpdateItem
    throttle: float = 0.0
    server_error: float = 0.0
    reset_after_send: float = 0.0
    latency_seconds: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        chances = (self.throttle, self.server_error, self.reset_after_send)
        if min(chances) < 0 or sum(chances) > 1:
            raise ValueError(f"fault probabilities must be >= 0 and sum to at most 1: {chances}")
        if not 0 <= self.latency_seconds[0] <= self.latency_seconds[1]:
            raise ValueError(
                f"latency_seconds must be (low, high) with 0 <= low <= high: {self.latency_seconds}"
            )

    def matches(self, service: str, operation: str) -> bool:
        return self.service in ("*", service) and self.operation in ("*", operation)


@dataclass(frozen=True)
class AwsError:
    """An error response as the service's protocol spells it."""

    status: int
    code: str
    message: str


# What each service sends when it throttles, and for a server-side failure (Service Authorization
# and API references; DynamoDB's item operations throttle with ProvisionedThroughputExceededException,
# its other operations with ThrottlingException).
DYNAMODB_ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
THROTTLES: dict[str, AwsError] = {
    "dynamodb": AwsError(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
    "s3": AwsError(503, "SlowDown", "Please reduce your request rate."),
    "states": AwsError(400, "ThrottlingException", "Rate exceeded"),
    "sqs": AwsError(400, "RequestThrottled", "Request is throttled."),
    "secretsmanager": AwsError(400, "ThrottlingException", "Rate exceeded"),
    "lambda": AwsError(429, "TooManyRequestsException", "Rate Exceeded."),
    "events": AwsError(400, "ThrottlingException", "Rate exceeded"),
}
DYNAMODB_ITEM_THROTTLE = AwsError(
    400,
    "ProvisionedThroughputExceededException",
    "The level of configured provisioned throughput for the table was exceeded.",
)
SERVER_ERRORS: dict[str, AwsError] = {
    "dynamodb": AwsError(500, "InternalServerError", "Internal server error"),
    "s3": AwsError(500, "InternalError", "We encountered an internal error. Please try again."),
    "states": AwsError(500, "InternalFailure", "The request processing has failed."),
    "sqs": AwsError(500, "InternalError", "We encountered an internal error. Please try again."),
    "secretsmanager": AwsError(500, "InternalServiceError", "An error occurred on the server side."),
    "lambda": AwsError(500, "ServiceException", "The AWS Lambda service encountered an internal error."),
    "events": AwsError(500, "InternalException", "An internal error occurred."),
}
# Lambda's error when Step Functions' own call to it fails without a response (an SDK client error).
LAMBDA_NO_RESPONSE = AwsError(500, "SdkClientException", "Unable to execute HTTP request: Connection reset")
# Services whose protocol answers errors as JSON (`__type`); the rest (S3) as XML.
JSON_SERVICES = frozenset({"dynamodb", "states", "sqs", "secretsmanager", "lambda", "events"})


def error_for(kind: str, service: str, operation: str) -> AwsError:
    """The error a throttle or server error of `service` carries."""
    if kind == THROTTLE:
        if service == "dynamodb" and operation in DYNAMODB_ITEM_OPERATIONS:
            return DYNAMODB_ITEM_THROTTLE
        return THROTTLES.get(service, AwsError(400, "ThrottlingException", "Rate exceeded"))
    return SERVER_ERRORS.get(service, AwsError(500, "InternalFailure", "Internal failure"))


def error_response(service: str, error: AwsError) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of `error` in `service`'s wire protocol."""
    status = f"{error.status} {error.code}"
    request_id = f"fault-{random.getrandbits(64):016x}"
    if service in JSON_SERVICES:
        body = json.dumps({"__type": error.code, "message": error.message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-ErrorType", error.code),
            ("x-amzn-RequestId", request_id),
        ]
        if service == "sqs":  # SQS's JSON protocol also names the query-protocol code
            headers.append(("x-amzn-query-error", f"{error.code};Sender"))
    else:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{error.code}</Code><Message>{error.message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


class AwsFaults:
    """The fault plan (rules, changeable at run time) and the count of what it injected."""

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int | None = None) -> None:
        self._rules: tuple[FaultRule, ...] = tuple(rules)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._injected: Counter[tuple[str, str]] = Counter()
        self._calls: Counter[str] = Counter()

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        """Replace the plan (takes effect with the next call); no rules = no faults."""
        self._rules = tuple(rules)

    def injected(self) -> dict[str, dict[str, int]]:
        """{"service.Operation": {kind: count}} of every fault injected so far; the Step Functions
        engine's own calls as "service.Operation (Step Functions engine)"."""
        found: dict[str, dict[str, int]] = {}
        with self._lock:
            for (label, kind), count in sorted(self._injected.items()):
                found.setdefault(label, {})[kind] = count
        return found

    def calls(self) -> dict[str, int]:
        """{"service.Operation": count} of every call the plan was asked about (faulted or not)."""
        with self._lock:
            return dict(sorted(self._calls.items()))

    def decide(self, service: str, operation: str, caller: str = "") -> tuple[str | None, float]:
        """(fault kind or None, seconds of latency to add) for one call; `caller` only labels it."""
        rule = next((r for r in self._rules if r.matches(service, operation)), None)
        label = f"{service}.{operation}" + (f" ({caller})" if caller else "")
        with self._lock:
            self._calls[label] += 1
            if rule is None:
                return None, 0.0
            low, high = rule.latency_seconds
            delay = self._random.uniform(low, high) if high > 0 else 0.0
            draw = self._random.random()
            kind = None
            for name in KINDS:
                draw -= getattr(rule, name)
                if draw < 0:
                    kind = name
                    break
            if kind is not None:
                self._injected[(label, kind)] += 1
        return kind, delay

    # -- in process: the Step Functions engine's Lambda tasks --------------------------------

    def lambda_fault(self, invoke: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one in-process Invoke under the plan: a throttle or service error raises botocore's
        ClientError before the function runs (as Lambda refuses it); a reset runs the function, then
        raises the SDK client error Step Functions reports when the response never came."""
        from botocore.exceptions import ClientError

        kind, delay = self.decide("lambda", "Invoke", ENGINE)
        if delay:
            time.sleep(delay)
        if kind in (THROTTLE, SERVER_ERROR):
            raise ClientError(_client_error_response(error_for(kind, "lambda", "Invoke")), "Invoke")
        response = invoke()
        if kind == RESET:
            raise ClientError(_client_error_response(LAMBDA_NO_RESPONSE), "Invoke")
        return response

    # -- over HTTP: every request to the moto server ------------------------------------------

    def install(self) -> Callable[[], None]:
        """Fault requests to the moto server in this process; the returned callable stops it."""
        application = dispatcher_class()
        with _LOCK:
            original = application.__dict__["__call__"]
            if getattr(original, _MARKER, False):
                raise AwsFaultsError("AWS faults are already installed in this process")
            faults = self

            def faulty_call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
                return faults._serve(original, self, environ, start_response)

            setattr(faulty_call, _MARKER, True)
            application.__call__ = faulty_call

        def restore() -> None:
            with _LOCK:
                if application.__dict__.get("__call__") is faulty_call:
                    application.__call__ = original

        return restore

    def _serve(self, app: Any, owner: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if not self._rules or environ.get("PATH_INFO", "").startswith("/moto-api"):
            return app(owner, environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        authorization = environ.get("HTTP_AUTHORIZATION")
        signer = request_signer(authorization, query, "us-east-1")
        # Only SDK calls signed in a header: presigned URLs are fetched by the provider, not by us.
        if not authorization or not signer.service or signer.access_key_id == OBSERVER_ACCESS_KEY:
            return app(owner, environ, start_response)
        body = take_body(environ)
        operation = _operation(signer.service, environ, body)
        caller = ENGINE if signer.access_key_id == ENGINE_ACCESS_KEY else ""
        kind, delay = self.decide(signer.service, operation, caller)
        if delay:
            time.sleep(delay)
        if kind in (THROTTLE, SERVER_ERROR):
            error = error_for(kind, signer.service, operation)
            status, headers, payload = error_response(signer.service, error)
            start_response(status, headers)
            return [payload]
        if kind != RESET:
            return app(owner, environ, start_response)
        # The service does the work; the caller never hears of it.
        for _ in app(owner, environ, lambda status, headers, exc_info=None: None):
            pass
        _reset(environ.get("werkzeug.socket"))
        # werkzeug wants a response: writing it fails on the dead socket, which it drops quietly.
        start_response("500 Connection reset", [("Content-Length", "0")])
        return []


def _operation(service: str, environ: dict[str, Any], body: bytes) -> str:
    """The API operation of a request: the JSON protocols name it in X-Amz-Target, REST ones (S3,
    Lambda) are routed with moto's botocore-model router."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rpartition(".")[2]
    from moto.core.request import Request

    copy = dict(environ)
    copy["wsgi.input"] = io.BytesIO(body)
    try:
        return route_operation(SERVICE_MODEL_NAMES.get(service, service), Request(copy))
    except Exception:  # no operation matches: fault it under "*" rules only
        return "?"


def _reset(connection: Any) -> None:
    """End the client's connection before any response: shut down now, and SO_LINGER 0 makes
    werkzeug's close of the socket send RST (the caller sees the connection reset or closed)."""
    if not isinstance(connection, socket.socket):
        return
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def _client_error_response(error: AwsError) -> Any:  # botocore types it as a private TypedDict
    request_id = f"fault-{random.getrandbits(64):016x}"
    return {
        "Error": {"Code": error.code, "Message": error.message},
        "ResponseMetadata": {"HTTPStatusCode": error.status, "RequestId": request_id},
    }
