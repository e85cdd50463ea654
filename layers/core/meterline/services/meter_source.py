"""Where the meters in force come from. For now: the YAML file named by METERLINE_METERS_FILE,
read once per process. Meters stored through the API replace this when they land."""

from __future__ import annotations

from functools import cache

from meterline.domain.meters import MeterCatalog, load_meters_file
from meterline.settings import settings


@cache
def meter_catalog() -> MeterCatalog:
    path = settings().meters_file
    return MeterCatalog(load_meters_file(path) if path else ())
