"""Fixtures of the client's own tests: a fake Meterline API and a client wired to it, with fast retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import pytest

from meterline_client import Meterline, MeterlineError
from tests.client.fake_meterline import FakeMeterlineAPI

FAST = {"flush_interval_seconds": 0.05, "retry_base_seconds": 0.01, "retry_max_seconds": 0.05,
        "exit_flush_seconds": None}


@pytest.fixture
def api() -> FakeMeterlineAPI:
    return FakeMeterlineAPI()


@pytest.fixture
def make_client(api: FakeMeterlineAPI) -> Iterator[Callable[..., Meterline]]:
    """Clients of the fake API (keyword arguments override the fast defaults); closed after the test."""
    made: list[Meterline] = []

    def make(**options: Any) -> Meterline:
        client = Meterline("http://meterline.test", source="tests", transport=api.transport(), **{**FAST, **options})
        made.append(client)
        return client

    yield make
    api.down = False  # let close() deliver what a test's outage left buffered
    api.scripted.clear()
    for client in made:
        with suppress(MeterlineError):  # what a test left undelivered on purpose
            client.close(timeout=1)


@pytest.fixture
def meterline(make_client: Callable[..., Meterline]) -> Meterline:
    return make_client()
