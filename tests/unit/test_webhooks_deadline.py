"""The watchdog behind a webhook attempt's deadline, on a loopback socket pair: at the deadline it shuts
down the socket it guards, so even a call that would block forever on its own returns; once the attempt
is over (cancelled) it leaves the socket alone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from meterline.webhooks.delivery import _Deadline


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        yield client, server


def test_a_read_without_any_timeout_ends_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    started = time.monotonic()
    deadline = _Deadline(started + 0.3)
    deadline.guard(client)
    client.settimeout(None)  # on its own, this read would wait for ever
    assert client.recv(1) == b""  # the watchdog shut the connection down under it
    assert 0.3 <= time.monotonic() - started < 0.8
    assert deadline.passed()
    with pytest.raises(TimeoutError):
        deadline.remaining()


def test_a_cancelled_deadline_leaves_the_socket_alone(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    deadline = _Deadline(time.monotonic() + 0.1)
    deadline.guard(client)
    deadline.cancel()
    time.sleep(0.3)
    server.sendall(b"still here")
    client.settimeout(1)
    assert client.recv(64) == b"still here"


def test_guarding_after_the_deadline_shuts_the_socket_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    deadline = _Deadline(time.monotonic() - 1)
    deadline.guard(client)
    client.settimeout(1)
    assert client.recv(1) == b""
