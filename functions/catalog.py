"""Which Lambda serves what. The CDK api construct and the local gateway both route from this,
so a route cannot exist in one and not the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HttpFunction:
    name: str  # folder under functions/, and the construct id stem
    routes: tuple[tuple[str, str], ...]  # (method, path template)
    description: str

    @property
    def module(self) -> str:
        return f"functions.{self.name}.handler"


INGEST = HttpFunction(
    name="ingest",
    routes=(("POST", "/api/v1/events"),),
    description="Validates and stores usage events exactly once",
)
API = HttpFunction(
    name="api",
    routes=(
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/meters"),
        ("POST", "/api/v1/meters"),
        ("GET", "/api/v1/meters/{idOrSlug}"),
        ("PUT", "/api/v1/meters/{idOrSlug}"),
        ("DELETE", "/api/v1/meters/{idOrSlug}"),
        ("GET", "/api/v1/meters/{idOrSlug}/query"),
        ("POST", "/api/v1/meters/{idOrSlug}/query"),
    ),
    description="Lists events and manages meters and answers usage queries",
)
HTTP_FUNCTIONS = (INGEST, API)

# The events-table stream consumer.
PROCESSOR_MODULE = "functions.processor.handler"

# Scheduled every minute: folds counting rows into quarter-hour and day slots.
COMPACTOR_MODULE = "functions.compactor.handler"
