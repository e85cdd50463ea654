"""The meters in force in a namespace: its stored meters, cached per process for a short TTL.

The stream processor asks once per batch and the events listing once per request, so a warm lookup is
a dict read. A change made through the API shows in other processes within the TTL
(METERLINE_METER_CACHE_SECONDS, default 30; the local stack uses 1); the process that made it drops its
cached copy at once.
"""

from __future__ import annotations

import threading
import time

from meterline import bootstrap
from meterline.domain.meters import MeterCatalog
from meterline.settings import meter_cache_seconds
from meterline.storage.meters_store import MetersStore

MAX_NAMESPACES = 1024  # bounds the memory of a long-lived process serving many namespaces

_cache: dict[str, tuple[float, MeterCatalog]] = {}
_lock = threading.Lock()
_generation = 0  # bumped by invalidate(): a read that started before a change is not cached after it


def ttl_seconds() -> float:
    return meter_cache_seconds()


def meter_catalog(namespace: str, store: MetersStore | None = None) -> MeterCatalog:
    """The namespace's meters, indexed by event type; re-read from the catalog table once the cached
    copy is older than the TTL."""
    now = time.monotonic()
    cached = _cache.get(namespace)
    if cached is not None and cached[0] > now:
        return cached[1]
    generation = _generation
    catalog = MeterCatalog((store or bootstrap.meters_store()).meters(namespace))
    with _lock:
        if generation != _generation:
            return catalog
        if namespace not in _cache and len(_cache) >= MAX_NAMESPACES:
            _cache.pop(min(_cache, key=lambda ns: _cache[ns][0]))
        _cache[namespace] = (now + ttl_seconds(), catalog)
    return catalog


def invalidate(namespace: str | None = None) -> None:
    """Forget the cached meters of a namespace (or of all): after a change, or between tests."""
    global _generation
    with _lock:
        _generation += 1
        if namespace is None:
            _cache.clear()
        else:
            _cache.pop(namespace, None)
