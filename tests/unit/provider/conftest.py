from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from imagejobs.provider import ProviderClient

from .fakes import Canned, FakeAdapter, FakeClock

API_KEY = "sk_live_SECRET_do_not_leak_1234567890"
BASE_URL = "http://provider.test"

MakeClient = Callable[..., tuple[ProviderClient, FakeAdapter, FakeClock]]


@pytest.fixture
def make_client() -> MakeClient:
    """make_client(*steps, **client_kwargs) -> (client, adapter, clock); no network anywhere."""

    def factory(
        *steps: Canned | BaseException, **kwargs: Any
    ) -> tuple[ProviderClient, FakeAdapter, FakeClock]:
        adapter = FakeAdapter(*steps)
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        clock = FakeClock()
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "session": session,
            "sleep": clock.sleep,
            "clock": clock,
            "random": lambda: 0.5,
        }
        options.update(kwargs)
        client = ProviderClient(BASE_URL, **options)
        return client, adapter, clock

    return factory
