"""The provider's failures, as one hierarchy. What the pipeline does with each is its ``retryable``
flag and, for a submission, whether the request may have been processed:

* ProviderError -- the base; ``str()`` never holds the API key or a raw body dump
  + ProviderRejected -- 400, or rejected here before sending (``local=True``): fix the payload
  + ProviderUnauthorized -- 401: missing, invalid, revoked or expired API key
  + InsufficientCredits -- 402: nothing was charged
  + TaskNotFound -- 404 on a poll
  + RateLimited -- 429: not processed; retryable, after ``retry_after`` when given
  + ProviderServerError -- 5xx (retryable) or a status or body the provider does not document
  + ProviderUnreachable -- never reached the provider (DNS, refused, connect timeout): retryable
  + OutcomeUnknown -- sent, answer lost: a submission may have been charged and is never resent
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "InsufficientCredits",
    "OutcomeUnknown",
    "ProviderError",
    "ProviderRejected",
    "ProviderServerError",
    "ProviderUnauthorized",
    "ProviderUnreachable",
    "RateLimited",
    "TaskNotFound",
]

_SAFE_TEXT_CHARS = 300


def clip(text: str, limit: int = _SAFE_TEXT_CHARS) -> str:
    """Text from the provider, cut short enough to log and to keep in a job record."""
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
        super().__init__(clip(message))
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
            f"task {clip(task_id, 100)!r} not found" if task_id else "task not found", status_code=404
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
