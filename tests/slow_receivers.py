"""Webhook endpoints that misbehave, for tests of the sender's deadline: a raw TCP server on 127.0.0.1 whose
every connection is handed to a `behaviour` (trickle the answer a byte at a time, never answer, send an
endless body...). Each behaviour runs in a thread of its own and ends when the client goes away or the
receiver is closed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Behaviour = Callable[["Connection"], None]


@dataclass
class Connection:
    sock: socket.socket
    stopping: threading.Event
    sent: int = 0
    client_went_away: bool = False  # a send failed: the client closed (or reset) the connection

    def read_request(self) -> bytes:
        """The request head and its Content-Length body (what post_webhook sends)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return data

    def send(self, data: bytes) -> bool:
        """False once the client has gone away."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.client_went_away = True
            return False
        self.sent += len(data)
        return True

    def trickle(self, data: bytes, every_s: float) -> None:
        """`data` one byte at a time, `every_s` apart, until it is all sent or the client goes away."""
        for byte in data:
            if self.stopping.wait(every_s) or not self.send(bytes([byte])):
                return

    def hold(self) -> None:
        """Keep the connection open, saying nothing, until the receiver closes."""
        self.stopping.wait()


@dataclass
class RawReceiver:
    behaviour: Behaviour
    tls: bool = False
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accepted = threading.Event()
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            connection = Connection(sock, self.stopping)
            self.connections.append(connection)
            self.accepted.set()
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, connection: Connection) -> None:
        try:
            self.behaviour(connection)
        except OSError:
            connection.client_went_away = True
        finally:
            connection.sock.close()

    def close(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (closing alone would not)
        self.listener.close()
        for thread in self.threads:
            thread.join(5)


# --- behaviours ------------------------------------------------------------------------------------


def trickled(response: bytes, every_s: float = 0.2, *, at_once: int = 0) -> Behaviour:
    """Read the request, send the first `at_once` bytes of `response`, then the rest a byte every `every_s`."""
    def behaviour(connection: Connection) -> None:
        connection.read_request()
        if connection.send(response[:at_once]):
            connection.trickle(response[at_once:], every_s)
        connection.hold()
    return behaviour


def never_answers(connection: Connection) -> None:
    """Accept the connection and never read or write a byte."""
    connection.hold()


def endless_body(head: bytes, every_s: float = 0.0) -> Behaviour:
    """Send `head`, then a body that never ends: 64 KiB blocks as fast as the client takes them, or one
    byte every `every_s`."""
    def behaviour(connection: Connection) -> None:
        connection.read_request()
        if not connection.send(head):
            return
        block = b"x" * (65536 if every_s == 0 else 1)
        while not connection.stopping.wait(every_s) and connection.send(block):
            pass
    return behaviour


def body_of(head: bytes, size: int) -> Behaviour:
    """Send `head` and then `size` bytes of body, as fast as the client takes them."""
    def behaviour(connection: Connection) -> None:
        connection.read_request()
        if not connection.send(head):
            return
        block = b"y" * 65536
        left = size
        while left > 0 and connection.send(block[:left]):
            left -= len(block[:left])
        connection.hold()
    return behaviour


def trickled_tls_handshake(connection: Connection) -> None:
    """Read the ClientHello, then answer with the header of a 16 KiB TLS handshake record and its body a
    byte every 0.2 s: each byte is news to the client, so a per-read timeout never fires."""
    connection.sock.recv(65536)
    if connection.send(b"\x16\x03\x03\x40\x00"):
        connection.trickle(b"\x02" * 16384, 0.2)
    connection.hold()


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
