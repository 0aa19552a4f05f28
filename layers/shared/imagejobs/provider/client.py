"""The provider's three endpoints, with the retries that are safe.

The one rule that shapes this package: submissions (``POST .../generate``) are NOT idempotent and
credits are debited at submission. A submission is retried automatically only when the request is
known not to have been processed: it never reached the provider (connect failure), the provider
said 429, or it answered with a 5xx error (the provider documents 500 as "retry with backoff"). If
the request may have been processed -- read timeout, connection reset after sending, a 2xx body we
cannot read -- the client raises ``OutcomeUnknown`` and never resends. Polls (``GET``) are safe to
repeat and are retried on any transient failure.

Retries are a small explicit loop here rather than urllib3's ``Retry``, which cannot tell "never
sent" from "sent, answer lost" for a POST.
"""

from __future__ import annotations

import logging
import random as random_module
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests

from imagejobs import catalog
from imagejobs.provider.config import Limits, RetryPolicy, Timeout
from imagejobs.provider.errors import (
    OutcomeUnknown,
    ProviderError,
    ProviderRejected,
    ProviderUnauthorized,
    ProviderUnreachable,
)
from imagejobs.provider.models import (
    Submission,
    TaskSnapshot,
    TaskStatus,
    as_int,
    as_str,
    parse_snapshot,
    parse_status,
)
from imagejobs.provider.transport import Transport

__all__ = ["IMAGE_PATH", "TASK_PATH", "VIDEO_PATH", "ApiKey", "ProviderClient"]

logger = logging.getLogger(__name__)

IMAGE_PATH = "/api/ai/image/generate"
VIDEO_PATH = "/api/ai/video/generate"
TASK_PATH = "/api/ai/tasks/{task_id}"

ApiKey = str | Callable[[], str]

DEFAULT_TIMEOUT = Timeout()
DEFAULT_LIMITS = Limits()
DEFAULT_RETRY = RetryPolicy()


class ProviderClient:
    """Client for the provider's three endpoints, with safe retries.

    ``api_key`` is the key or a zero-argument callable returning it (e.g. a Powertools
    ``parameters.get_secret`` call, which caches). The key is resolved per call, sent only in
    the ``Authorization`` header of each request, and never logged or shown in ``repr``.

    ``session``: pass one to share a pool or (in tests) mount a fake adapter. Without one the
    client builds a session with a pooled ``HTTPAdapter`` (``limits.pool_size`` connections, no
    urllib3 retries). A session whose adapter would resend POSTs is refused.

    ``sleep``, ``random`` and ``clock`` are the waits, the jitter and the monotonic clock; tests
    pass their own.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey,
        session: requests.Session | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        limits: Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY,
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
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._api_key = api_key
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.transport = Transport(self.base_url, session, timeout, limits, clock)

    def __repr__(self) -> str:
        timeout = self.transport.timeout
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, connect_timeout={timeout.connect:g}, "
            f"read_timeout={timeout.read:g}, max_attempts={self.retry.max_attempts})"
        )

    @property
    def session(self) -> requests.Session:
        return self.transport.session

    def close(self) -> None:
        self.transport.close()

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
        task_id = as_str(data.get("taskId")) or as_str(data.get("id"))
        if task_id is None:
            # A 2xx without a task id: the task may still have been created and charged.
            raise OutcomeUnknown("provider accepted the submission but returned no taskId", submission=True)
        credits = as_int(data.get("creditsUsed"))
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
                return self.transport.exchange(
                    method, path, body, key, submission=submission, task_id=task_id
                )
            except ProviderError as err:
                delay = self.retry.delay(err, attempt, submission=submission, random=self._random)
                if delay is None:
                    raise
                if self._clock() - started + delay > self.retry.max_total_seconds:
                    logger.warning(
                        "provider %s %s failed (%s); retry budget of %gs spent after %d attempt(s)",
                        method,
                        path,
                        err,
                        self.retry.max_total_seconds,
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
                    self.retry.max_attempts,
                )
                self._sleep(delay)
