"""`Meterline`: send usage events and ask for entitlement values, over the OpenMeter v1 HTTP API only, so the
same client works against Meterline and against OpenMeter."""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from meterline_client.delivery import MAX_BATCH_EVENTS, EventSender
from meterline_client.entitlements import NO_ENTITLEMENT, AccessCache, EntitlementValue
from meterline_client.errors import MeterlineAPIError, MeterlineError, MeterlineUnavailableError, problem_of
from meterline_client.events import complete_event, rfc3339

logger = logging.getLogger("meterline_client")

DEFAULT_SOURCE = "meterline-client"
USER_AGENT = "meterline-client/0.1.0"

Event = Mapping[str, Any]


class Meterline:
    """A Meterline (or OpenMeter) endpoint.

    `ingest` buffers events; a background thread sends them in batches (at most `batch_size` events, and at
    most `flush_interval_seconds` after the oldest was buffered) and retries 429, 5xx and network errors with
    the same event ids until they are acknowledged. `flush` waits for that; a process exiting normally flushes
    too (for up to `exit_flush_seconds`). `value` and `has_access` read entitlements.

    `source` is the CloudEvents source of events that do not name one. With the event id it is the server's
    idempotency key, so keep it the same on every host that may send the same event (a retried Lambda, say).
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, source: str | None = None, *,
                 cache_seconds: float = 5.0, timeout_seconds: float = 5.0, batch_size: int = MAX_BATCH_EVENTS,
                 flush_interval_seconds: float = 1.0, retry_base_seconds: float = 0.2,
                 retry_max_seconds: float = 10.0, exit_flush_seconds: float | None = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        url = url or os.environ.get("METERLINE_URL")
        if not url:
            raise ValueError("no Meterline URL: pass url= or set METERLINE_URL")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the Meterline URL must start with http:// or https://, got {url!r}")
        api_key = api_key or os.environ.get("METERLINE_API_KEY")
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.source = source or DEFAULT_SOURCE

        def http_client() -> httpx.Client:
            return httpx.Client(base_url=self.url, headers=headers, timeout=timeout_seconds, transport=transport)

        # One connection pool for the sender thread, one for the callers' reads: neither waits for the other.
        self._reads = http_client()
        self._sender = EventSender(http_client(), batch_size=batch_size,
                                   flush_interval_seconds=flush_interval_seconds,
                                   retry_base_seconds=retry_base_seconds, retry_max_seconds=retry_max_seconds)
        self._access = AccessCache(cache_seconds)
        self._exit_flush_seconds = exit_flush_seconds
        if exit_flush_seconds is not None:
            atexit.register(self._flush_at_exit)

    # Usage events

    def ingest(self, event_or_events: Event | Iterable[Event]) -> None:
        """Buffer one event or several (CloudEvents as dicts; `type` and `subject` required). Returns at once;
        an event that cannot be sent as it is (no type or subject, data that is not JSON) raises here."""
        events = [event_or_events] if isinstance(event_or_events, Mapping) else list(event_or_events)
        self._sender.add([complete_event(event, self.source) for event in events])

    def flush(self, timeout: float = 5.0) -> None:
        """Block until every event ingested before this call is acknowledged.

        Raises `FlushTimeoutError` if they were not delivered within `timeout` seconds (they stay buffered and
        are still retried), and `EventsRejectedError` if the server refused some for good since the last
        flush (a 4xx other than 429: they are not retried)."""
        self._sender.flush(timeout)

    @property
    def pending(self) -> int:
        """Events buffered and not yet acknowledged."""
        return self._sender.pending

    # Entitlements

    def value(self, subject: str, feature_key: str, at: datetime | None = None) -> EntitlementValue:
        """The subject's entitlement value for the feature (now, or `at`). No entitlement is no access.

        Raises `MeterlineAPIError` for an error answer, `MeterlineUnavailableError` when the server cannot be
        reached (one retry first)."""
        path = f"/api/v1/subjects/{quote(subject, safe='')}/entitlements/{quote(feature_key, safe='')}/value"
        params = {"time": rfc3339(at)} if at is not None else None
        response = self._get(path, params)
        if response.status_code == 404 and "problem+json" in response.headers.get("content-type", ""):
            # The API's own 404 (a gateway's 404 of a wrong URL is not problem+json, and raises below).
            return NO_ENTITLEMENT
        if not response.is_success:
            raise MeterlineAPIError(response.status_code, problem_of(response), response.text)
        try:
            return EntitlementValue.from_api(response.json())
        except ValueError as error:
            raise MeterlineAPIError(response.status_code, None, f"unexpected answer: {error}") from error

    def has_access(self, subject: str, feature_key: str) -> bool:
        """Whether the subject may use the feature, remembered for `cache_seconds`."""
        cached = self._access.get(subject, feature_key)
        if cached is not None:
            return cached
        has_access = self.value(subject, feature_key).has_access
        self._access.put(subject, feature_key, has_access)
        return has_access

    # Lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Flush, stop the sender thread and close the connections. Raises like `flush`."""
        try:
            self.flush(timeout)
        finally:
            self._sender.close(timeout)
            self._reads.close()
            if self._exit_flush_seconds is not None:
                atexit.unregister(self._flush_at_exit)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _flush_at_exit(self) -> None:
        assert self._exit_flush_seconds is not None
        try:
            self.flush(self._exit_flush_seconds)
        except MeterlineError as error:
            logger.error("at exit: %s", error)  # nothing can be retried any more: say what is lost

    def _get(self, path: str, params: Mapping[str, str] | None) -> httpx.Response:
        """One retry, 0.1 s later, after a network error, a 429 or a 5xx: a caller is waiting for the answer."""
        try:
            response = self._reads.get(path, params=params)
            if response.status_code != 429 and response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
        try:
            return self._reads.get(path, params=params)
        except httpx.TransportError as error:
            raise MeterlineUnavailableError(f"GET {path}: {type(error).__name__}: {error}") from error
