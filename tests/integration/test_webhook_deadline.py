"""post_webhook's hard deadline, against receivers on 127.0.0.1 that misbehave on purpose: an attempt never
takes longer than its timeout plus a small margin whatever the receiver does, counts a status only when the
whole response head arrived in time, and reads a bounded number of response bytes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meterline.webhooks import EndpointPolicy, WebhookAttempt, new_signing_secret, post_webhook
from meterline.webhooks.delivery import DEADLINE_MARGIN_SECONDS, MAX_HEAD_BYTES
from tests.slow_receivers import (
    Behaviour,
    RawReceiver,
    body_of,
    endless_body,
    never_answers,
    trickled,
    trickled_tls_handshake,
    wait_for,
)

BODY = json.dumps({"subject": "customer-1", "usage": [{"meter": "tokens", "value": 42}]}).encode()
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
FAIL_HEAD = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
TIMEOUT_S = 1.0
# What an attempt may take at most: the timeout and the margin (the deadline's own slack, not the test's).
LIMIT_S = TIMEOUT_S + DEADLINE_MARGIN_SECONDS


@pytest.fixture
def serve() -> Iterator[list[RawReceiver]]:
    started: list[RawReceiver] = []
    yield started
    for receiver in started:
        receiver.close()


def start(serve: list[RawReceiver], behaviour: Behaviour, *, tls: bool = False) -> RawReceiver:
    receiver = RawReceiver(behaviour, tls=tls)
    serve.append(receiver)
    return receiver


def attempt(url: str, timeout_s: float = TIMEOUT_S) -> tuple[WebhookAttempt, float]:
    """The attempt and the wall-clock seconds it took."""
    started = time.monotonic()
    result = post_webhook(url, BODY, webhook_id="msg_1", secret=new_signing_secret(),
                          policy=EndpointPolicy(allow_loopback=True), timeout_s=timeout_s)
    return result, time.monotonic() - started


@pytest.mark.parametrize("at_once", [0, len(b"HTTP/1.1 200 OK\r\n")], ids=["whole-response", "after-the-status-line"])
def test_a_response_trickled_a_byte_every_200_ms_times_out_at_the_deadline(serve: list[RawReceiver],
                                                                         at_once: int) -> None:
    # 60 bytes at 0.2 s each would hold the attempt 12 s; a status line that came at once counts for nothing
    # while the rest of the head still trickles.
    receiver = start(serve, trickled(OK, 0.2, at_once=at_once))
    result, took = attempt(receiver.url)
    assert (result.ok, result.status_code, result.error) == (False, None, "timed out after 1 s")
    assert TIMEOUT_S <= took < LIMIT_S
    assert result.duration_ms < LIMIT_S * 1000
    [connection] = receiver.connections
    assert 0 < connection.sent < len(OK)


def test_a_receiver_that_accepts_and_never_answers_times_out(serve: list[RawReceiver]) -> None:
    receiver = start(serve, never_answers)
    result, took = attempt(receiver.url)
    assert (result.ok, result.status_code, result.error) == (False, None, "timed out after 1 s")
    assert TIMEOUT_S <= took < LIMIT_S


def test_a_connect_that_is_never_accepted_times_out(serve: list[RawReceiver]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        with socket.create_connection(listener.getsockname()):  # fills the backlog: the next SYN waits
            result, took = attempt(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
    assert (result.ok, result.status_code, result.error) == (False, None, "timed out after 1 s")
    assert TIMEOUT_S <= took < LIMIT_S


def test_a_slow_dns_answer_counts_against_the_deadline(serve: list[RawReceiver], monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    receiver = start(serve, trickled(OK, at_once=len(OK)))

    def slow_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        time.sleep(3)  # the receiver's name servers take their time
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    result, took = attempt(f"http://hooks.localhost:{receiver.port}/hook")
    assert (result.ok, result.status_code, result.error) == (False, None, "timed out after 1 s")
    assert TIMEOUT_S <= took < LIMIT_S
    assert receiver.connections == []


def test_a_tls_handshake_trickled_a_byte_at_a_time_times_out(serve: list[RawReceiver]) -> None:
    receiver = start(serve, trickled_tls_handshake, tls=True)
    result, took = attempt(receiver.url)
    assert (result.ok, result.status_code, result.error) == (False, None, "timed out after 1 s")
    assert TIMEOUT_S <= took < LIMIT_S


def test_an_error_with_an_endless_body_is_read_up_to_the_cap(serve: list[RawReceiver]) -> None:
    receiver = start(serve, endless_body(FAIL_HEAD))
    result, took = attempt(receiver.url, timeout_s=5.0)
    assert (result.ok, result.status_code) == (False, 500)
    assert result.error == "HTTP 500: " + "x" * 200  # the excerpt stays short
    assert took < 2.0  # not read until the deadline: the body is capped
    [connection] = receiver.connections
    assert wait_for(lambda: connection.client_went_away)


def test_an_error_whose_body_trickles_keeps_its_status_and_ends_at_the_deadline(serve: list[RawReceiver]) -> None:
    receiver = start(serve, endless_body(FAIL_HEAD, every_s=0.2))
    result, took = attempt(receiver.url)
    assert (result.ok, result.status_code) == (False, 500)  # the head was complete in time: its status counts
    assert result.error is not None and result.error.startswith("HTTP 500")
    assert took < LIMIT_S


@pytest.mark.parametrize("behaviour", [
    body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n", 50 * 1024 * 1024),
    endless_body(b"HTTP/1.1 200 OK\r\n\r\n"),
    endless_body(b"HTTP/1.1 200 OK\r\n\r\n", every_s=0.2),
], ids=["50-MiB-body", "endless-body", "trickled-endless-body"])
def test_a_2xx_succeeds_as_soon_as_its_head_is_in_whatever_the_body(serve: list[RawReceiver],
                                                                    behaviour: Behaviour) -> None:
    receiver = start(serve, behaviour)
    result, took = attempt(receiver.url, timeout_s=5.0)
    assert (result.ok, result.status_code, result.error) == (True, 200, None)
    assert took < 2.0
    [connection] = receiver.connections
    assert wait_for(lambda: connection.client_went_away)  # the body was never read to its end


def test_a_response_head_over_the_bound_is_a_failure(serve: list[RawReceiver]) -> None:
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))  # 40 KiB of headers
    receiver = start(serve, trickled(b"HTTP/1.1 200 OK\r\n" + padding + b"Content-Length: 0\r\n\r\n",
                                     at_once=1 << 20))
    result, took = attempt(receiver.url, timeout_s=5.0)
    assert (result.ok, result.status_code) == (False, None)
    assert result.error == f"the response head is larger than {MAX_HEAD_BYTES} bytes"
    assert took < 2.0


def test_a_well_behaved_receiver_still_succeeds(serve: list[RawReceiver]) -> None:
    receiver = start(serve, trickled(OK, at_once=len(OK)))
    result, took = attempt(receiver.url)
    assert (result.ok, result.status_code, result.error) == (True, 200, None)
    assert took < TIMEOUT_S
