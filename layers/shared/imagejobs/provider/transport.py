"""One HTTP exchange with the provider, its outcome mapped to a JSON object or a ProviderError.

What this module decides is the distinction the whole pipeline rests on: a request that certainly
never reached the provider (``ProviderUnreachable``, safe to resend) versus one that was sent and
whose answer was lost (``OutcomeUnknown``: a submission may have been charged). Retrying is the
client's business, not this module's.
"""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import BaseAdapter, HTTPAdapter

from imagejobs.provider.config import Limits, Timeout
from imagejobs.provider.errors import (
    InsufficientCredits,
    OutcomeUnknown,
    ProviderError,
    ProviderRejected,
    ProviderServerError,
    ProviderUnauthorized,
    ProviderUnreachable,
    RateLimited,
    TaskNotFound,
    clip,
)
from imagejobs.provider.models import as_int, as_str

__all__ = ["MAX_RESPONSE_BYTES", "Transport", "parse_retry_after"]

# Responses are small JSON documents; anything bigger is not the provider we know.
MAX_RESPONSE_BYTES = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class Transport:
    """Sends one request on a pooled session; never retries, never resends a POST."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None,
        timeout: Timeout,
        limits: Limits,
        clock: Callable[[], float],
    ):
        self.base_url = base_url
        self.timeout = timeout
        self.limits = limits
        self._clock = clock
        self._last_exchange: float | None = None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=limits.pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        elif _adapter_may_resend_posts(session.get_adapter(base_url)):
            raise ValueError(
                "the session's adapter retries POSTs; use max_retries=0 (this client retries safely)"
            )
        self.session = session

    def close(self) -> None:
        self.session.close()

    def exchange(
        self, method: str, path: str, body: dict[str, Any] | None, key: str, *, submission: bool, task_id: str
    ) -> dict[str, Any]:
        """The answer's JSON object on a 2xx; else the ProviderError the answer (or its absence) means."""
        if submission:
            self.drop_idle_connections()
        try:
            status, raw, retry_after = self._send(method, path, body, key)
        except _BodyTooLarge:
            if submission:
                raise OutcomeUnknown("provider response body too large", submission=True) from None
            raise ProviderServerError(200, "response body too large", retryable=True) from None
        except requests.RequestException as exc:
            if _never_sent(exc):
                raise ProviderUnreachable(f"provider unreachable: {_describe(exc)}") from exc
            what = "submission" if submission else "request"
            raise OutcomeUnknown(
                f"provider {what} outcome unknown (sent, no complete answer): {_describe(exc)}",
                submission=submission,
            ) from exc
        except urllib3.exceptions.HTTPError as exc:  # anything requests does not wrap
            raise OutcomeUnknown(
                f"provider transport error: {_describe(exc)}", submission=submission
            ) from exc
        data = _json_object(raw)
        if not 200 <= status < 300:
            raise error_for_status(status, data or {}, retry_after, submission=submission, task_id=task_id)
        if data is None:
            if submission:
                raise OutcomeUnknown(
                    "provider accepted the submission but the body is not a JSON object",
                    submission=True,
                    status_code=status,
                )
            raise ProviderServerError(status, "body is not a JSON object", retryable=True)
        return data

    def drop_idle_connections(self) -> None:
        """Before a submission, close pooled connections that sat idle long enough to be stale.

        Servers close idle keep-alive connections (Node.js, which the provider's examples run on,
        after 5 s by default). A POST written into a connection the server is closing fails with
        a reset *after* sending: an OutcomeUnknown we cannot retry. A fresh connection instead
        fails, if at all, before sending. Polls need none of this: they are retried.
        """
        limit = self.limits.fresh_connection_after_idle
        last = self._last_exchange
        if limit is None or last is None or self._clock() - last <= limit:
            return
        adapter = self.session.get_adapter(self.base_url)
        if isinstance(adapter, HTTPAdapter):
            # Closes idle pooled connections only; connections in use by other threads are
            # closed when they are returned.
            adapter.poolmanager.clear()

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, key: str
    ) -> tuple[int, bytes, str | None]:
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        with self.session.request(
            method,
            self.base_url + path,
            json=body,
            headers=headers,
            timeout=self.timeout.as_requests(),
            allow_redirects=False,  # a redirected POST would silently become a GET
            stream=True,  # read the status first, then a size-capped body
        ) as response:
            answer = (response.status_code, _read_capped(response), response.headers.get("Retry-After"))
        self._last_exchange = self._clock()
        return answer


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (past dates give 0)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_for_status(
    status: int, data: Mapping[str, Any], retry_after: str | None, *, submission: bool, task_id: str
) -> ProviderError:
    """The documented meaning of a non-2xx answer."""
    message = as_str(data.get("error")) or ""
    if status == 400:
        return _rejected(data, message)
    if status == 401:
        return ProviderUnauthorized()
    if status == 402:
        return InsufficientCredits(as_int(data.get("required")))
    if status == 404 and not submission:
        return TaskNotFound(task_id)
    if status == 429:
        return RateLimited(parse_retry_after(retry_after))
    if status == 504 and submission:
        # A gateway timeout means the origin may still be processing the submission.
        return OutcomeUnknown(
            "provider gateway timed out (504) on a submission", submission=True, status_code=504
        )
    return ProviderServerError(status, clip(message, 120))


def _rejected(data: Mapping[str, Any], message: str) -> ProviderRejected:
    raw_details = data.get("details")
    details: Mapping[str, Any] = raw_details if isinstance(raw_details, Mapping) else {}
    field_errors: dict[str, list[str]] = {}
    raw_fields = details.get("fieldErrors")
    if isinstance(raw_fields, Mapping):
        for name, messages in raw_fields.items():
            if isinstance(messages, list):
                field_errors[str(name)] = [str(m) for m in messages]
            elif isinstance(messages, str):
                field_errors[str(name)] = [messages]
    raw_forms = details.get("formErrors")
    form_errors = [str(m) for m in raw_forms] if isinstance(raw_forms, list) else []
    if not field_errors and not form_errors:
        form_errors = [message or "invalid request"]
    return ProviderRejected(field_errors, form_errors)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (requests/urllib3 nest errors in args, .reason and causes)."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        current = pending.pop(0)  # breadth first: outermost wrapper first
        if any(current is known for known in seen):
            continue
        seen.append(current)
        nested: list[Any] = [
            getattr(current, "reason", None),
            getattr(current, "original_error", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        pending.extend(item for item in nested if isinstance(item, BaseException))
    return seen


# urllib3 raises these only while opening the connection, before a byte of the request is sent.
# (NewConnectionError and NameResolutionError subclass ConnectTimeoutError.)
_PRE_SEND_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.ClosedPoolError,
)


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when the request certainly did not reach the provider."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    causes = _causes(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        # Certificate problems fail the handshake, before the request is written; other TLS
        # errors may happen mid-exchange, so they stay "unknown".
        return any(isinstance(c, ssl.SSLCertVerificationError) for c in causes)
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    # A read timeout while streaming the body is a ConnectionError too: check it first.
    if any(
        isinstance(c, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError) for c in causes
    ):
        return False
    return any(isinstance(c, _PRE_SEND_ERRORS) for c in causes)


def _describe(exc: BaseException) -> str:
    """A short, key-free description of a transport error: the wrapped exception types, outermost first."""
    names: list[str] = []
    for item in _causes(exc):
        name = type(item).__name__
        if name not in names:
            names.append(name)
    return " <- ".join(names[:4])


def _adapter_may_resend_posts(adapter: BaseAdapter) -> bool:
    if not isinstance(adapter, HTTPAdapter):
        return False  # custom adapters (tests, mocks) are the caller's business
    retries = adapter.max_retries
    if retries.total in (0, False):
        return False
    post_allowed = retries.allowed_methods is None or "POST" in retries.allowed_methods
    resend_budget = [retries.read, retries.other, retries.status]
    return post_allowed and any(value not in (0, False) for value in resend_budget)


def _read_capped(response: requests.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
