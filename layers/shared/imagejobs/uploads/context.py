"""What handling an upload needs, as one object: the clients, the job records, the function's
settings and the clock (built once per invocation by S3IntakeFunction; by tests with fakes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagejobs.config import S3IntakeSettings
from imagejobs.store import JobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class UploadContext:
    s3: S3Client
    sqs: SQSClient
    store: JobStore
    settings: S3IntakeSettings
    now: Callable[[], float] = field(default=time.time)
