"""Secrets (the provider API key, the webhook signing secret), read from Secrets Manager through
Powertools Parameters (cached)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from mypy_boto3_secretsmanager import SecretsManagerClient

T = TypeVar("T")


class SecretNotConfigured(RuntimeError):
    """The API key secret exists but holds no usable key."""


def parse_api_key(secret_name: str, raw: str | bytes | None) -> str:
    """Accept a plain string secret or JSON ``{"apiKey": "..."}``."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else (raw or "")
    text = text.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise SecretNotConfigured(f"secret {secret_name} looks like JSON but does not parse") from None
        value = document.get("apiKey") if isinstance(document, dict) else None
        text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise SecretNotConfigured(
            f"secret {secret_name} holds no provider API key; set it with "
            f"aws secretsmanager put-secret-value --secret-id {secret_name} --secret-string 'sk_live_...'"
        )
    return text


class SecretSource(Generic[T]):
    """Callable returning a secret, parsed, cached for ``max_age`` seconds (read on every use).

    A dedicated SecretsProvider (over an injected or lazily built client) keeps the
    cache per source, so tests and the local stack never see another endpoint's secret.
    """

    def __init__(
        self,
        secret_name: str,
        parse: Callable[[str, str | bytes | None], T],
        secrets_client: SecretsManagerClient | None = None,
        max_age: int = 300,
    ) -> None:
        self.secret_name = secret_name
        self.max_age = max_age
        self._parse = parse
        self._client = secrets_client
        self._provider: SecretsProvider | None = None  # built on first use

    def __call__(self) -> T:
        if self._provider is None:
            from aws_lambda_powertools.utilities import parameters

            self._provider = parameters.SecretsProvider(boto3_client=self._client)
        raw = self._provider.get(self.secret_name, max_age=self.max_age)
        return self._parse(self.secret_name, raw if isinstance(raw, str | bytes) else None)

    def __repr__(self) -> str:  # never show the secret
        return f"{type(self).__name__}({self.secret_name!r})"


class ApiKeySource(SecretSource[str]):
    """The provider client calls it on every request."""

    def __init__(
        self, secret_name: str, secrets_client: SecretsManagerClient | None = None, max_age: int = 300
    ) -> None:
        super().__init__(secret_name, parse_api_key, secrets_client, max_age)
