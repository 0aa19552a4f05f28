"""The generation provider ("GPT Image 2" API): its failures (``errors``), what it answers
(``models``), one HTTP exchange (``transport``), the client with its safe retries (``client``) and
the client's policies (``config``). Submissions are NOT idempotent: see ``client``."""

from imagejobs.provider.client import ApiKey, ProviderClient
from imagejobs.provider.config import Limits, RetryPolicy, Timeout
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
)
from imagejobs.provider.models import (
    Submission,
    TaskReader,
    TaskSnapshot,
    TaskStatus,
    TaskSubmitter,
    parse_snapshot,
    parse_status,
)
from imagejobs.provider.transport import parse_retry_after

__all__ = [
    "ApiKey",
    "InsufficientCredits",
    "Limits",
    "OutcomeUnknown",
    "ProviderClient",
    "ProviderError",
    "ProviderRejected",
    "ProviderServerError",
    "ProviderUnauthorized",
    "ProviderUnreachable",
    "RateLimited",
    "RetryPolicy",
    "Submission",
    "TaskNotFound",
    "TaskReader",
    "TaskSnapshot",
    "TaskStatus",
    "TaskSubmitter",
    "Timeout",
    "parse_retry_after",
    "parse_snapshot",
    "parse_status",
]
