"""Each handler's dependencies, built from its own settings: one runtime class per handler.

The settings are parsed before a runtime exists (at the handler's import); the clients are built
on first use and cached, so importing a handler stays cheap (bench/cold_start.py). boto3 honours
``AWS_ENDPOINT_URL``, so the same wiring talks to AWS or to the local stack.
"""

from __future__ import annotations

from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING

import requests
from standardwebhooks import Webhook

from imagejobs.batch_results import BatchRecords
from imagejobs.batches import BatchStore, SqsResultsQueue
from imagejobs.config import (
    FIRST_POLL_AUTO,
    BatchResultsSettings,
    FinalizeSettings,
    IntakeSettings,
    JobEventsSettings,
    JobRecordsSettings,
    PollSettings,
    ProviderSettings,
    S3IntakeSettings,
    StoreOutputsSettings,
    WebhookSettings,
)
from imagejobs.copier import OutputCopier
from imagejobs.events import EventBridgePublisher
from imagejobs.first_poll import FirstPollPolicy
from imagejobs.provider import ProviderClient
from imagejobs.secrets import ApiKeySource, SecretSource
from imagejobs.store import JobStore
from imagejobs.urls import PinnedAddressAdapter
from imagejobs.webhooks import SqsDeadLetters, SqsDeliveryQueue, signing_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


def _boto3() -> ModuleType:
    """boto3, imported on first use: its import (~150 ms) would otherwise dominate cold-start imports."""
    import boto3

    return boto3


class _JobRecords:
    settings: JobRecordsSettings

    @cached_property
    def table(self) -> Table:
        return _boto3().resource("dynamodb").Table(self.settings.jobs_table)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.table)


class _Provider:
    settings: ProviderSettings

    @cached_property
    def provider(self) -> ProviderClient:
        api_key = ApiKeySource(self.settings.provider_api_key_secret, _boto3().client("secretsmanager"))
        return ProviderClient(self.settings.provider_base_url, api_key)


class _S3:
    @cached_property
    def s3(self) -> S3Client:
        return _boto3().client("s3")


class _Sqs:
    @cached_property
    def sqs(self) -> SQSClient:
        return _boto3().client("sqs")


class IntakeRuntime(_JobRecords, _Provider, _S3, _Sqs):
    settings: IntakeSettings

    def __init__(self, settings: IntakeSettings) -> None:
        self.settings = settings

    @cached_property
    def sfn(self) -> SFNClient:
        return _boto3().client("stepfunctions")

    @cached_property
    def first_poll(self) -> FirstPollPolicy:
        # Only FirstPollAfter=auto reads the records (and needs the role's Query on ByStatus).
        times = self.store if self.settings.first_poll_after == FIRST_POLL_AUTO else None
        return FirstPollPolicy.from_settings(self.settings, times)


class PollRuntime(_Provider):
    settings: PollSettings

    def __init__(self, settings: PollSettings) -> None:
        self.settings = settings


def pinned_session(allow_hosts: tuple[str, ...]) -> requests.Session:
    """A session whose connections go only to addresses checked when connecting (no retries:
    the callers decide what a failure means)."""
    session = requests.Session()
    adapter = PinnedAddressAdapter(allow_hosts=allow_hosts, pool_maxsize=10, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class StoreOutputsRuntime(_JobRecords, _S3):
    settings: StoreOutputsSettings

    def __init__(self, settings: StoreOutputsSettings) -> None:
        self.settings = settings

    @cached_property
    def copier(self) -> OutputCopier:
        return OutputCopier(
            pinned_session(self.settings.url_allow_hosts),
            self.s3,
            self.settings.output_bucket,
            max_bytes=self.settings.max_output_bytes,
            allow_hosts=self.settings.url_allow_hosts,
        )


class FinalizeRuntime(_JobRecords):
    settings: FinalizeSettings

    def __init__(self, settings: FinalizeSettings) -> None:
        self.settings = settings


class S3IntakeRuntime(_JobRecords, _S3, _Sqs):
    settings: S3IntakeSettings

    def __init__(self, settings: S3IntakeSettings) -> None:
        self.settings = settings


class JobEventsRuntime(_JobRecords, _Sqs):
    settings: JobEventsSettings

    def __init__(self, settings: JobEventsSettings) -> None:
        self.settings = settings

    @cached_property
    def publisher(self) -> EventBridgePublisher:
        from botocore.config import Config

        # One quick retry: a failed record fails its stream batch, which the event source
        # retries (MaximumRetryAttempts); long back-offs here would only hold the shard.
        client = _boto3().client("events", config=Config(retries={"mode": "standard", "max_attempts": 2}))
        return EventBridgePublisher(client, self.settings.event_bus_name)

    @cached_property
    def webhooks(self) -> SqsDeliveryQueue:
        return SqsDeliveryQueue(self.sqs, self.settings.webhook_queue_url)

    @cached_property
    def batches(self) -> BatchStore:
        return BatchStore(self.table)

    @cached_property
    def results_queue(self) -> SqsResultsQueue:
        return SqsResultsQueue(self.sqs, self.settings.batch_results_queue_url)


class BatchResultsRuntime(_JobRecords, _S3):
    settings: BatchResultsSettings

    def __init__(self, settings: BatchResultsSettings) -> None:
        self.settings = settings

    @cached_property
    def batches(self) -> BatchStore:
        return BatchStore(self.table)

    @cached_property
    def records(self) -> BatchRecords:
        return BatchRecords(self.table)


class WebhookRuntime(_Sqs):
    settings: WebhookSettings

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings

    @cached_property
    def session(self) -> requests.Session:
        return pinned_session(self.settings.url_allow_hosts)

    @cached_property
    def signer(self) -> SecretSource[Webhook]:
        return SecretSource(
            self.settings.webhook_signing_secret, signing_key, _boto3().client("secretsmanager")
        )

    @cached_property
    def dead_letters(self) -> SqsDeadLetters:
        return SqsDeadLetters(self.sqs, self.settings.webhook_dead_letter_queue_url)
