"""The event buffer and its background sender.

Events wait in one FIFO queue. A daemon thread sends them from its head in batches (at most 1,000 events and
1,000,000 bytes, the server's request limits) once a batch is full, the oldest event has waited
`flush_interval_seconds`, or someone flushes. An event leaves the queue only when the server acknowledged it
(2xx) or refused it for good (a 4xx other than 429, surfaced as `EventsRejectedError`); on 429, 5xx and network
errors the same batch, with the same ids, is sent again after a backoff. Because the queue is only ever
consumed from its head, "every event up to sequence number N is settled" is "the head is past N", which is
what `flush` waits for.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from meterline_client.errors import EventsRejectedError, FlushTimeoutError, problem_detail, problem_of

logger = logging.getLogger("meterline_client")

EVENTS_PATH = "/api/v1/events"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1_000_000  # the server takes 1 MiB per request; the brackets and commas fit in the rest
RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx


@dataclass(slots=True, frozen=True)
class BufferedEvent:
    seq: int
    event: dict[str, Any]
    body: bytes  # the event's JSON, encoded once when it was buffered
    buffered_at: float  # time.monotonic()


@dataclass(slots=True, frozen=True)
class Retry:
    """The batch stays at the head of the queue and is sent again after `delay_seconds`."""

    reason: str
    delay_seconds: float | None = None  # what the server asked for (Retry-After)


@dataclass(slots=True, frozen=True)
class Rejected:
    """The server refused the events at `indexes` of the batch for good; the others go again."""

    indexes: frozenset[int]
    error: EventsRejectedError


@dataclass(slots=True, frozen=True)
class TooLarge:
    """413: send the batch again in halves."""


Outcome = None | Retry | Rejected | TooLarge  # None: every event of the batch was acknowledged


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


class EventSender:
    """Buffers events and sends them from one background thread, started with the first event."""

    def __init__(self, http: httpx.Client, *, batch_size: int = MAX_BATCH_EVENTS,
                 flush_interval_seconds: float = 1.0, retry_base_seconds: float = 0.2,
                 retry_max_seconds: float = 10.0) -> None:
        if not 1 <= batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_EVENTS}, got {batch_size}")
        self._http = http
        self._batch_size = batch_size
        self._flush_interval = flush_interval_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._changed = threading.Condition()
        self._queue: deque[BufferedEvent] = deque()
        self._queued_bytes = 0
        self._next_seq = 0
        self._flush_upto = -1  # a flush waits for every event up to this seq: send without waiting for a full batch
        self._retry_now = False  # a new flush cuts a retry backoff short
        self._split_limit: int | None = None  # after a 413: send at most this many events per request
        self._failed_attempts = 0
        self._last_error: str | None = None
        self._rejections: list[EventsRejectedError] = []
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Events buffered and not yet acknowledged."""
        with self._changed:
            return len(self._queue)

    def add(self, events: Sequence[Mapping[str, Any]]) -> None:
        bodies = [encode(event) for event in events]  # a value JSON cannot carry fails here, in the caller
        now = time.monotonic()
        with self._changed:
            if self._closing:
                raise RuntimeError("this Meterline client is closed")
            for event, body in zip(events, bodies, strict=True):
                self._queue.append(BufferedEvent(self._next_seq, dict(event), body, now))
                self._queued_bytes += len(body)
                self._next_seq += 1
            self._ensure_thread()
            self._changed.notify_all()

    def flush(self, timeout_seconds: float) -> None:
        """Wait until every event added before this call is acknowledged (or refused, which is raised)."""
        with self._changed:
            upto = self._next_seq - 1
            self._flush_upto = max(self._flush_upto, upto)
            self._retry_now = True
            self._changed.notify_all()
            settled = self._changed.wait_for(lambda: not self._queue or self._queue[0].seq > upto, timeout_seconds)
            if not settled:
                raise FlushTimeoutError(len(self._queue), timeout_seconds, self._last_error)
            rejections, self._rejections = self._rejections, []
        if rejections:
            raise rejections[0] if len(rejections) == 1 else EventsRejectedError(
                [event for error in rejections for event in error.events], rejections[-1].status,
                rejections[-1].problem)

    def close(self, timeout_seconds: float) -> None:
        """Stop the thread once the queue is empty or `timeout_seconds` passed; later `add`s fail."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_seconds)

    def _ensure_thread(self) -> None:
        # Not alive also in a forked child, which has the queue but not the thread.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="meterline-sender", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                batch = self._next_batch()
            if batch is None:
                return
            outcome = self._send(batch)
            with self._changed:
                delay = self._settle(batch, outcome)
                self._changed.notify_all()
                if delay:
                    self._retry_now = False  # only a flush from now on cuts this backoff short
                    self._changed.wait_for(lambda: self._retry_now, delay)

    def _next_batch(self) -> list[BufferedEvent] | None:
        """Under the lock: the events to send next, once a batch is due; None when closed and drained."""
        while True:
            if not self._queue:
                if self._closing:
                    return None
                self._changed.wait()
                continue
            head = self._queue[0]
            waited = time.monotonic() - head.buffered_at
            due = (self._closing or head.seq <= self._flush_upto or waited >= self._flush_interval
                   or len(self._queue) >= self._batch_size or self._queued_bytes >= MAX_BATCH_BYTES)
            if due:
                return self._take_batch()
            self._changed.wait(self._flush_interval - waited)

    def _take_batch(self) -> list[BufferedEvent]:
        limit = min(self._batch_size, self._split_limit or self._batch_size)
        batch: list[BufferedEvent] = []
        size = 2  # the brackets
        for buffered in itertools.islice(self._queue, limit):
            if batch and size + len(buffered.body) + 1 > MAX_BATCH_BYTES:
                break
            batch.append(buffered)
            size += len(buffered.body) + 1
        return batch

    def _send(self, batch: list[BufferedEvent]) -> Outcome:
        body = b"[" + b",".join(buffered.body for buffered in batch) + b"]"
        try:
            response = self._http.post(EVENTS_PATH, content=body, headers={"content-type": BATCH_CONTENT_TYPE})
        except httpx.TransportError as error:
            return Retry(f"{type(error).__name__}: {error}")
        except Exception as error:  # never let the thread die with events in the queue
            logger.exception("sending %d events failed unexpectedly; will retry", len(batch))
            return Retry(f"{type(error).__name__}: {error}")
        if response.is_success:
            return None
        problem = problem_of(response)
        status = response.status_code
        if status in RETRYABLE_STATUSES or status >= 500:
            return Retry(problem_detail(status, problem, response.text), _retry_after(response))
        if status == 413 and len(batch) > 1:
            return TooLarge()
        indexes = _invalid_indexes(problem, len(batch)) if status == 400 else None
        rejected = indexes if indexes else frozenset(range(len(batch)))
        events = [batch[index].event for index in sorted(rejected)]
        return Rejected(rejected, EventsRejectedError(events, status, problem, response.text))

    def _settle(self, batch: list[BufferedEvent], outcome: Outcome) -> float | None:
        """Under the lock: apply a send's outcome to the queue. Returns how long to wait before the next send."""
        if isinstance(outcome, Retry):
            self._failed_attempts += 1
            self._last_error = outcome.reason
            backoff = min(self._retry_max, self._retry_base * 2 ** (self._failed_attempts - 1))
            delay = max(backoff * random.uniform(0.5, 1.0), min(outcome.delay_seconds or 0.0, self._retry_max))
            logger.warning("sending %d events failed (%s); retrying in %.1f s", len(batch), outcome.reason, delay)
            return delay
        if isinstance(outcome, TooLarge):
            self._split_limit = max(1, len(batch) // 2)
            return None
        for _ in batch:
            self._queued_bytes -= len(self._queue.popleft().body)
        self._failed_attempts, self._last_error, self._split_limit = 0, None, None
        if isinstance(outcome, Rejected):
            logger.error("%s; first refused event: %s", outcome.error, outcome.error.events[0])
            self._rejections.append(outcome.error)
            # The others of the batch were not stored either (a request is validated as a whole): send them again.
            kept = [buffered for index, buffered in enumerate(batch) if index not in outcome.indexes]
            self._queue.extendleft(reversed(kept))
            self._queued_bytes += sum(len(buffered.body) for buffered in kept)
        return None


def _invalid_indexes(problem: Mapping[str, Any] | None, batch_length: int) -> frozenset[int] | None:
    """The events a 400 names (Meterline's `errors[].index`), when it names only events of the batch."""
    errors = (problem or {}).get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    indexes: set[int] = set()
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        if not isinstance(index, int) or not 0 <= index < batch_length:
            return None  # an error about the request as a whole, or not about this batch
        indexes.add(index)
    return frozenset(indexes)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
