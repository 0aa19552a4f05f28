"""A scripted fake transport for ProviderClient: a requests adapter, canned responses, real exceptions.

The exceptions are built the way requests/urllib3 build them (checked against real sockets in
tests/integration/provider/test_transport_faults.py), so the client's classification is tested
on the same shapes it meets in production.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions as u3
from requests.adapters import BaseAdapter

URL = "http://provider.test/api/ai/image/generate"


@dataclass
class Canned:
    """A response the fake adapter returns."""

    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    body_error: BaseException | None = None  # raised by the raw stream after the first bytes

    def build(self, request: requests.PreparedRequest) -> requests.Response:
        raw_bytes = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        response = requests.Response()
        response.status_code = self.status
        response.headers.update({"Content-Type": "application/json", **self.headers})
        response.raw = _RawStream(raw_bytes, self.body_error)
        response.url = request.url or ""
        response.request = request
        response.reason = http.client.responses.get(self.status, "")
        return response


class _RawStream(io.BytesIO):
    """Looks like urllib3's HTTPResponse to requests (has .stream), so requests translates errors."""

    def __init__(self, data: bytes, error: BaseException | None):
        super().__init__(data)
        self.error = error

    def stream(self, chunk_size: int, decode_content: bool = True) -> Iterator[bytes]:
        first = self.read(max(1, len(self.getvalue()) // 2) if self.error else chunk_size)
        if first:
            yield first
        if self.error is not None:
            raise self.error
        while chunk := self.read(chunk_size):
            yield chunk


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    timeout: Any
    stream: bool


class FakeAdapter(BaseAdapter):
    """Returns (or raises) the scripted steps in order; records every request it sees."""

    def __init__(self, *steps: Canned | BaseException):
        super().__init__()
        self.steps = list(steps)
        self.sent: list[Sent] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = json.loads(request.body) if request.body else None
        self.sent.append(
            Sent(request.method or "", request.url or "", dict(request.headers), body, timeout, stream)
        )
        if not self.steps:
            raise AssertionError(f"unexpected extra request {request.method} {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            step.request = request
            raise step
        return step.build(request)

    def close(self) -> None:
        pass

    def count(self, method: str) -> int:
        return sum(1 for s in self.sent if s.method == method)


# ---- exceptions exactly as requests' HTTPAdapter raises them (max_retries=0)


def connection_refused() -> requests.exceptions.ConnectionError:
    inner = u3.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    inner.__context__ = ConnectionRefusedError(111, "Connection refused")
    return requests.exceptions.ConnectionError(u3.MaxRetryError(None, URL, inner))


def name_resolution_failed() -> requests.exceptions.ConnectionError:
    inner = u3.NameResolutionError("provider.test", None, socket.gaierror(-2, "Name or service not known"))
    return requests.exceptions.ConnectionError(u3.MaxRetryError(None, URL, inner))


def connect_timeout() -> requests.exceptions.ConnectTimeout:
    inner = u3.ConnectTimeoutError(None, "Connection to provider.test timed out. (connect timeout=3.05)")
    return requests.exceptions.ConnectTimeout(u3.MaxRetryError(None, URL, inner))


def cert_verify_failed() -> requests.exceptions.SSLError:
    inner = u3.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    return requests.exceptions.SSLError(u3.MaxRetryError(None, URL, inner))


def read_timeout() -> requests.exceptions.ReadTimeout:
    return requests.exceptions.ReadTimeout(
        u3.ReadTimeoutError(None, URL, "Read timed out. (read timeout=30)")
    )


def remote_disconnected() -> requests.exceptions.ConnectionError:
    cause = http.client.RemoteDisconnected("Remote end closed connection without response")
    return requests.exceptions.ConnectionError(u3.ProtocolError("Connection aborted.", cause))


def connection_reset() -> requests.exceptions.ConnectionError:
    cause = ConnectionResetError(104, "Connection reset by peer")
    return requests.exceptions.ConnectionError(u3.ProtocolError("Connection aborted.", cause))


def truncated_body() -> u3.ProtocolError:
    """Raised by the raw stream mid-body; requests turns it into ChunkedEncodingError."""
    return u3.ProtocolError("Connection broken: IncompleteRead(10 bytes read, 20 more expected)")


def body_read_timeout() -> u3.ReadTimeoutError:
    """Raised by the raw stream mid-body; requests turns it into a plain ConnectionError."""
    return u3.ReadTimeoutError(None, URL, "Read timed out.")


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
