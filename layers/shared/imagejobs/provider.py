"""HTTP client for the generation provider ("GPT Image 2" API).

The one rule that shapes this module: submissions (``POST .../generate``) are NOT idempotent
and credits are debited at submission. A submission is retried automatically only when the
request is known not to have been processed: it never reached the provider (connect failure),
the provider said 429, or it answered with a 5xx error (the provider documents 500 as
"retry with backoff"). If the request may have been processed -- read timeout, connection
reset after sending, a 2xx body we cannot read -- the client raises ``OutcomeUnknown`` and
never resends. Polls (``GET``) are safe to repeat and are retried on any transient failure.

Retries are a small explicit loop here rather than urllib3's ``Retry``, which cannot tell
"never sent" from "sent, answer lost" for a POST.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random as random_module
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from imagejobs import catalog

logger = logging.getLogger(__name__)

IMAGE_PATH = "/api/ai/image/generate"
VIDEO_PATH = "/api/ai/video/generate"
TASK_PATH = "/api/ai/tasks/{task_id}"

# Responses are small JSON documents; anything bigger is not the provider we know.
MAX_RESPONSE_BYTES = 1024 * 1024
_SAFE_TEXT_CHARS = 300


# --------------------------------------------------------------------------- results


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


_STATUS_CODES = {0: TaskStatus.PENDING, 1: TaskStatus.COMPLETED, 2: TaskStatus.FAILED}


@dataclass(frozen=True)
class Submission:
    task_id: str
    credits_used: int
    status: TaskStatus


@dataclass(frozen=True)
class TaskSnapshot:
    task_id: str
    kind: Literal["image", "video"] | None
    status: TaskStatus
    output_urls: tuple[str, ...]  # the image URLs, or the video URL
    error_code: str | None
    error_message: str | None
    credits_used: int | None
    credits_refunded: bool | int | None
    created_at: str | None
    completed_at: str | None
    updated_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status is not TaskStatus.PENDING


class TaskSubmitter(Protocol):
    """What IntakeFunction needs of the provider (ProviderClient; test fakes)."""

    def submit_image(self, body: Mapping[str, Any]) -> Submission: ...

    def submit_video(self, body: Mapping[str, Any]) -> Submission: ...


class TaskReader(Protocol):
    """What PollFunction needs of the provider (ProviderClient; test fakes)."""

    def get_task(self, task_id: str) -> TaskSnapshot: ...


# --------------------------------------------------------------------------- errors


def _clip(text: str, limit: int = _SAFE_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProviderError(Exception):
    """Base of every provider failure. ``str()`` never contains the API key or a raw body dump."""

    retryable: bool = False

    def __init__(
        self,
        message: str = "provider error",
        *,
        status_code: int | None = None,
        retryable: bool | None = None,
    ):
        super().__init__(_clip(message))
        self.status_code = status_code
        if retryable is not None:
            self.retryable = retryable


class ProviderRejected(ProviderError):
    """400: the request failed validation (ours, ``local=True``, or the provider's). Fix the payload."""

    def __init__(
        self,
        field_errors: Mapping[str, list[str]],
        form_errors: list[str] | None = None,
        *,
        local: bool = False,
    ):
        self.field_errors = {key: list(messages) for key, messages in field_errors.items()}
        self.form_errors = list(form_errors or [])
        self.local = local
        parts = [f"{key}: {'; '.join(messages)}" for key, messages in self.field_errors.items()]
        parts.extend(self.form_errors)
        origin = "rejected locally" if local else "provider rejected the request"
        super().__init__(
            f"{origin}: {' | '.join(parts) or 'invalid request'}", status_code=None if local else 400
        )


class ProviderUnauthorized(ProviderError):
    """401: missing, invalid, revoked or expired API key."""

    def __init__(self, message: str = "provider rejected the API key (401 Unauthorized)"):
        super().__init__(message, status_code=401)


class InsufficientCredits(ProviderError):
    """402: not enough credits; nothing was charged."""

    def __init__(self, required: int | None = None):
        self.required = required
        needed = f" ({required} required)" if required is not None else ""
        super().__init__(f"insufficient provider credits{needed}", status_code=402)


class TaskNotFound(ProviderError):
    """404: no such task for this API key."""

    def __init__(self, task_id: str = ""):
        self.task_id = task_id
        super().__init__(
            f"task {_clip(task_id, 100)!r} not found" if task_id else "task not found", status_code=404
        )


class RateLimited(ProviderError):
    """429: the request was not processed; wait ``retry_after`` seconds (when given)."""

    retryable = True

    def __init__(self, retry_after: float | None = None):
        self.retry_after = retry_after
        after = f", retry after {round(retry_after, 1):g}s" if retry_after is not None else ""
        super().__init__(f"rate limited by the provider (429){after}", status_code=429)


class ProviderServerError(ProviderError):
    """5xx, or any other status / body the provider does not document. 5xx is retryable."""

    def __init__(self, status: int, detail: str = "", *, retryable: bool | None = None):
        self.status = status
        text = f"provider answered HTTP {status}" + (f": {detail}" if detail else "")
        super().__init__(
            text, status_code=status, retryable=status >= 500 if retryable is None else retryable
        )


class ProviderUnreachable(ProviderError):
    """The request never reached the provider (DNS, refused, connect timeout): safe to retry."""

    retryable = True

    def __init__(self, message: str = "provider unreachable (the request was not sent)"):
        super().__init__(message)


class OutcomeUnknown(ProviderError):
    """The request may have been processed but the answer was lost.

    For a submission the task may exist and be charged: it is never retried (``retryable`` is
    False) and must not be resubmitted blindly. For a poll (GET) ``retryable`` is True.
    """

    def __init__(
        self,
        message: str = "provider outcome unknown (sent, no complete answer)",
        *,
        submission: bool = True,
        status_code: int | None = None,
    ):
        self.submission = submission
        super().__init__(message, status_code=status_code, retryable=not submission)


# --------------------------------------------------------------------------- parsing helpers


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_status(value: Any) -> TaskStatus | None:
    """0/1/2 (the documented ints) or the status names; None when unrecognised."""
    code = _as_int(value)
    if code is not None:
        return _STATUS_CODES.get(code)
    if isinstance(value, str):
        try:
            return TaskStatus(value.strip().upper())
        except ValueError:
            return None
    return None


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


def parse_snapshot(data: Mapping[str, Any], requested_task_id: str) -> TaskSnapshot:
    """Build a snapshot from either documented shape (quickstart or API reference).

    Unknown fields are kept in ``raw`` and otherwise ignored.
    """
    status = parse_status(data.get("status"))
    if status is None:
        # An undocumented status: keep polling until the deadline rather than guess terminal.
        logger.warning("provider returned an unknown task status %r; treating as pending", data.get("status"))
        status = TaskStatus.PENDING
    urls: list[str] = []
    for key in ("outputImageUrls", "imageUrls"):
        values = data.get(key)
        if isinstance(values, list):
            urls.extend(url for url in values if isinstance(url, str) and url and url not in urls)
    video_url = _as_str(data.get("videoUrl"))
    if video_url and video_url not in urls:
        urls.append(video_url)
    kind = data.get("type")
    refunded: Any = next(
        (data[key] for key in ("creditsRefunded", "creditRefunded") if data.get(key) is not None), None
    )
    if not isinstance(refunded, bool):
        refunded = _as_int(refunded)
    return TaskSnapshot(
        task_id=_as_str(data.get("id")) or _as_str(data.get("taskId")) or requested_task_id,
        kind=kind if kind in ("image", "video") else None,
        status=status,
        output_urls=tuple(urls),
        error_code=_as_str(data.get("errorCode")),
        error_message=_as_str(data.get("errorMessage")),
        credits_used=_as_int(data.get("creditsUsed")),
        credits_refunded=refunded,
        created_at=_as_str(data.get("createdAt")),
        completed_at=_as_str(data.get("completedAt")),
        updated_at=_as_str(data.get("updatedAt")),
        raw=dict(data),
    )


# --------------------------------------------------------------------------- transport failures


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
    chain = _causes(exc)
    names = []
    for item in chain:
        name = type(item).__name__
        if name not in names:
            names.append(name)
    return " <- ".join(names[:4])


# --------------------------------------------------------------------------- client


class _BodyTooLarge(Exception):
    pass


ApiKey = str | Callable[[], str]


class ProviderClient:
    """Client for the provider's three endpoints, with safe retries.

    ``api_key`` is the key or a zero-argument callable returning it (e.g. a Powertools
    ``parameters.get_secret`` call, which caches). The key is resolved per call, sent only in
    the ``Authorization`` header of each request, and never logged or shown in ``repr``.

    ``session``: pass one to share a pool or (in tests) mount a fake adapter. Without one the
    client builds a session with a pooled ``HTTPAdapter`` (``pool_size`` connections, no
    urllib3 retries). A session whose adapter would resend POSTs is refused.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 30,
        max_attempts: int = 3,
        *,
        pool_size: int = 10,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 20.0,
        max_total_seconds: float = 60.0,
        fresh_connection_after_idle: float | None = 4.0,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host (got {base_url!r})")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("base_url must not carry credentials, a query or a fragment")
        if not (isinstance(api_key, str) or callable(api_key)):
            raise TypeError("api_key must be a string or a zero-argument callable returning one")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.max_total_seconds = max_total_seconds
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.fresh_connection_after_idle = fresh_connection_after_idle
        self._last_exchange: float | None = None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        elif _adapter_may_resend_posts(session.get_adapter(self.base_url)):
            raise ValueError(
                "the session's adapter retries POSTs; use max_retries=0 (this client retries safely)"
            )
        self.session = session

    def __repr__(self) -> str:
        connect, read = self.timeout
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, connect_timeout={connect:g}, "
            f"read_timeout={read:g}, max_attempts={self.max_attempts})"
        )

    def close(self) -> None:
        self.session.close()

    # ---- public API

    def submit_image(self, body: Mapping[str, Any]) -> Submission:
        """POST /api/ai/image/generate. Raises ``ProviderRejected(local=True)`` before sending if invalid."""
        return self.submit("image", body)

    def submit_video(self, body: Mapping[str, Any]) -> Submission:
        """POST /api/ai/video/generate. Raises ``ProviderRejected(local=True)`` before sending if invalid."""
        return self.submit("video", body)

    def submit(self, kind: Literal["image", "video"], body: Mapping[str, Any]) -> Submission:
        errors = catalog.validate_generation_request(body, kind)
        if errors:
            raise ProviderRejected(errors, local=True)
        payload = dict(body)
        if kind == "video" and "inputMode" not in payload:
            # The provider says "-text-to-video models need text_to_video": sending a single-mode
            # model's only mode is right whether or not the provider would infer it.
            implied = catalog.implied_input_mode(catalog.get_model(str(payload.get("model"))))
            if implied is not None:
                payload["inputMode"] = implied
        path = IMAGE_PATH if kind == "image" else VIDEO_PATH
        data = self._call("POST", path, payload, submission=True)
        task_id = _as_str(data.get("taskId")) or _as_str(data.get("id"))
        if task_id is None:
            # A 2xx without a task id: the task may still have been created and charged.
            raise OutcomeUnknown("provider accepted the submission but returned no taskId", submission=True)
        credits = _as_int(data.get("creditsUsed"))
        if credits is None:
            # Not seen in practice; every poll snapshot carries the authoritative creditsUsed.
            logger.warning("provider submit response for task %s has no creditsUsed", task_id)
            credits = 0
        return Submission(
            task_id=task_id,
            credits_used=credits,
            status=parse_status(data.get("status")) or TaskStatus.PENDING,
        )

    def get_task(self, task_id: str) -> TaskSnapshot:
        """GET /api/ai/tasks/{id}. Transient failures are retried (polls are idempotent)."""
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError("task_id must be a non-empty string")
        data = self._call(
            "GET", TASK_PATH.format(task_id=quote(task_id, safe="")), None, submission=False, task_id=task_id
        )
        return parse_snapshot(data, task_id)

    # ---- internals

    def _resolve_key(self) -> str:
        try:
            key = self._api_key() if callable(self._api_key) else self._api_key
        except Exception as exc:
            # Nothing was sent: safe to retry later. The fetch error may be verbose; keep its type only.
            raise ProviderUnreachable(
                f"could not obtain the provider API key ({type(exc).__name__})"
            ) from exc
        if not isinstance(key, str) or not key.strip():
            raise ProviderUnauthorized("no provider API key configured (empty key)")
        return key.strip()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, submission: bool, task_id: str = ""
    ) -> dict[str, Any]:
        key = self._resolve_key()
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(method, path, body, key, submission=submission, task_id=task_id)
            except ProviderError as err:
                delay = self._retry_delay(err, attempt, submission)
                if delay is None:
                    raise
                if self._clock() - started + delay > self.max_total_seconds:
                    logger.warning(
                        "provider %s %s failed (%s); retry budget of %gs spent after %d attempt(s)",
                        method,
                        path,
                        err,
                        self.max_total_seconds,
                        attempt,
                    )
                    raise
                logger.warning(
                    "provider %s %s failed (%s); retrying in %.2fs (attempt %d of %d)",
                    method,
                    path,
                    err,
                    delay,
                    attempt,
                    self.max_attempts,
                )
                self._sleep(delay)

    def _retry_delay(self, err: ProviderError, attempt: int, submission: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if attempt >= self.max_attempts or not err.retryable:
            return None
        if submission and not isinstance(err, ProviderUnreachable | RateLimited | ProviderServerError):
            return None  # belt and braces: only "known not processed" failures resend a POST
        if isinstance(err, RateLimited) and err.retry_after is not None:
            if err.retry_after > self.max_retry_after:
                return None  # longer than we may wait here: let the caller's queue retry later
            return err.retry_after
        # Exponential backoff with full jitter.
        return self._random() * min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))

    def _drop_idle_connections(self) -> None:
        """Before a submission, close pooled connections that sat idle long enough to be stale.

        Servers close idle keep-alive connections (Node.js, which the provider's examples run on,
        after 5 s by default). A POST written into a connection the server is closing fails with
        a reset *after* sending: an OutcomeUnknown we cannot retry. A fresh connection instead
        fails, if at all, before sending. Polls need none of this: they are retried.
        """
        limit = self.fresh_connection_after_idle
        last = self._last_exchange
        if limit is None or last is None or self._clock() - last <= limit:
            return
        adapter = self.session.get_adapter(self.base_url)
        if isinstance(adapter, HTTPAdapter):
            # Closes idle pooled connections only; connections in use by other threads are
            # closed when they are returned.
            adapter.poolmanager.clear()

    def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, key: str, *, submission: bool, task_id: str
    ) -> dict[str, Any]:
        if submission:
            self._drop_idle_connections()
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        try:
            with self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,  # a redirected POST would silently become a GET
                stream=True,  # read the status first, then a size-capped body
            ) as response:
                status = response.status_code
                raw = _read_capped(response)
                retry_after_header = response.headers.get("Retry-After")
            self._last_exchange = self._clock()
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
        if 200 <= status < 300:
            if data is None:
                if submission:
                    raise OutcomeUnknown(
                        "provider accepted the submission but the body is not a JSON object",
                        submission=True,
                        status_code=status,
                    )
                raise ProviderServerError(status, "body is not a JSON object", retryable=True)
            return data
        raise _error_for_status(
            status, data or {}, retry_after_header, submission=submission, task_id=task_id
        )


def _adapter_may_resend_posts(adapter: Any) -> bool:
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


def _error_for_status(
    status: int, data: Mapping[str, Any], retry_after: str | None, *, submission: bool, task_id: str
) -> ProviderError:
    message = _as_str(data.get("error")) or ""
    if status == 400:
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
    if status == 401:
        return ProviderUnauthorized()
    if status == 402:
        return InsufficientCredits(_as_int(data.get("required")))
    if status == 404 and not submission:
        return TaskNotFound(task_id)
    if status == 429:
        return RateLimited(parse_retry_after(retry_after))
    if status == 504 and submission:
        # A gateway timeout means the origin may still be processing the submission.
        return OutcomeUnknown(
            "provider gateway timed out (504) on a submission", submission=True, status_code=504
        )
    return ProviderServerError(status, _clip(message, 120))
