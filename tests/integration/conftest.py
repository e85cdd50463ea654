"""Integration fixtures: meters live in the catalog table, so tests on moto get the example meters
(examples/meters.yaml, in the default namespace) seeded the way `meterline dev` seeds them. A module
that wants an empty catalog overrides `example_meters` with a fixture of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meterline.domain.meters import Meter, load_meters_file
from meterline.services import meter_source
from meterline.services.meters import seed_meters
from meterline.storage.meters_store import MetersStore
from tests.conftest import EXAMPLE_METERS

SEEDED_AT_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def example_meters(request: pytest.FixtureRequest) -> Iterator[list[Meter]]:
    """With the `aws` fixture: the example meters, stored in the default namespace."""
    meter_source.invalidate()
    meters: list[Meter] = []
    if "aws" in request.fixturenames:
        request.getfixturevalue("aws")
        meters = load_meters_file(EXAMPLE_METERS)
        seed_meters(MetersStore(), "default", meters, SEEDED_AT_MS)
    yield meters
    meter_source.invalidate()
