"""Lazily built, cached dependencies of the Lambda handlers (one set per module instance).

boto3 honours ``AWS_ENDPOINT_URL``, so the same wiring talks to AWS or to the local stack.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import requests

from imagejobs.config import Settings
from imagejobs.copier import OutputCopier
from imagejobs.provider import ProviderClient
from imagejobs.secrets import ApiKeySource
from imagejobs.store import JobStore
from imagejobs.urls import PinnedAddressAdapter


def _boto3() -> Any:
    """boto3, imported on first use: its import (~150 ms) would otherwise dominate cold-start imports."""
    import boto3

    return boto3


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @cached_property
    def settings(self) -> Settings:
        return self._settings or Settings.from_env()

    @cached_property
    def table(self) -> Any:
        return _boto3().resource("dynamodb").Table(self.settings.jobs_table)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.table)

    @cached_property
    def s3(self) -> Any:
        return _boto3().client("s3")

    @cached_property
    def sqs(self) -> Any:
        return _boto3().client("sqs")

    @cached_property
    def sfn(self) -> Any:
        return _boto3().client("stepfunctions")

    @cached_property
    def provider(self) -> ProviderClient:
        api_key = ApiKeySource(self.settings.provider_api_key_secret, _boto3().client("secretsmanager"))
        return ProviderClient(self.settings.provider_base_url, api_key)

    @cached_property
    def copier(self) -> OutputCopier:
        session = requests.Session()
        adapter = PinnedAddressAdapter(
            allow_hosts=self.settings.url_allow_hosts, pool_maxsize=10, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return OutputCopier(
            session,
            self.s3,
            self.settings.output_bucket,
            max_bytes=self.settings.max_output_bytes,
            allow_hosts=self.settings.url_allow_hosts,
        )
