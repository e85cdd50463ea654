"""POST one signed webhook to a user's endpoint, and say how it went.

The connection goes only to an address `EndpointPolicy.vetted_addresses` returned a moment before:
the socket is opened to that IP, never to the hostname, so a DNS answer that changes between the
check and the connect (rebinding) cannot reach a private address. TLS still uses the URL's hostname
for SNI and certificate verification. Redirects are not followed (a redirect could point anywhere).

An attempt has a hard deadline: `timeout_s` after it starts, whatever the receiver does (a slow DNS
answer, a slow connect or TLS handshake, a response trickled a byte at a time, a body that never ends).
Two things enforce it: every read from the server waits only until the deadline (a trickle cannot
stretch it, as it would a per-read timeout), and a watchdog timer shuts the socket down when the deadline
passes, which ends whatever is still blocked in it (a trickled TLS handshake, a write). The response's
status counts only if its whole head arrived before the deadline; a head larger than MAX_HEAD_BYTES is
not accepted, and of a failure's body at most MAX_BODY_BYTES are read, until the deadline at the latest,
for the excerpt shown in the delivery's last error. The body of a 2xx is not read at all.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, cast

from meterline.domain.reports import is_reserved_header
from meterline.webhooks.endpoints import EndpointPolicy, RefusedEndpoint, Target, parse_target
from meterline.webhooks.signing import signature_headers

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

USER_AGENT = "Meterline-Webhooks/1"
MAX_HEAD_BYTES = 16 * 1024  # status line and headers
MAX_BODY_BYTES = 64 * 1024  # of a failure's body, for its excerpt (including chunked framing)
ERROR_EXCERPT_CHARS = 200
# The most an attempt may outlast its timeout: the watchdog's wake-up and the socket's closing.
DEADLINE_MARGIN_SECONDS = 0.5
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")
_T = TypeVar("_T")


@dataclass(frozen=True)
class WebhookAttempt:
    status_code: int | None  # None when no HTTP response came back (refused, DNS, connect, TLS, timeout)
    error: str | None  # a short reason when not ok, safe to show the user and to log
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post_webhook(
    url: str,
    body: bytes,
    *,
    webhook_id: str,
    secret: str | Sequence[str],
    headers: Mapping[str, str] | None = None,
    policy: EndpointPolicy,
    timeout_s: float = 10.0,
    at: datetime | None = None,
) -> WebhookAttempt:
    """POST `body` (JSON) to `url`, signed with `secret` (or each of several secrets). Network failures
    come back as a failed attempt, never as an exception. The attempt ends `timeout_s` after the call
    starts at the latest (DNS lookup, connect, TLS, request and response head together), plus at most
    DEADLINE_MARGIN_SECONDS; one cut short by the deadline failed ("timed out after N s")."""
    started = time.monotonic()

    def finished(status_code: int | None, error: str | None) -> WebhookAttempt:
        return WebhookAttempt(status_code, error, int((time.monotonic() - started) * 1000))

    signature = signature_headers(secret, webhook_id, body, at or datetime.now(UTC))
    try:
        request_headers = _request_headers(headers or {}, signature)
    except ValueError as unfit:
        return finished(None, str(unfit))

    deadline = _Deadline(started + timeout_s)
    try:
        addresses = _before(deadline, functools.partial(policy.vetted_addresses, url))
        status, excerpt = _exchange(parse_target(url), addresses, body, request_headers, deadline)
    except RefusedEndpoint as refused:
        return finished(None, f"refused: {refused}")
    except (OSError, http.client.HTTPException) as failed:
        # Once the deadline has passed, whatever broke was broken by it (the watchdog shut the socket).
        timed_out = isinstance(failed, TimeoutError) or deadline.passed()
        return finished(None, f"timed out after {timeout_s:g} s" if timed_out else _reason(failed))
    finally:
        deadline.cancel()

    if 200 <= status < 300:
        return finished(status, None)
    if 300 <= status < 400:
        return finished(status, f"HTTP {status}: redirects are not followed")
    return finished(status, f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}")


def _reason(failed: OSError | http.client.HTTPException) -> str:
    """Why an attempt failed before its deadline, in words safe to show the user."""
    if isinstance(failed, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {failed.verify_message}"
    if isinstance(failed, ssl.SSLError):
        return f"TLS failed: {failed.reason or failed}"
    if isinstance(failed, ConnectionRefusedError):
        return "connection refused"
    if isinstance(failed, _OverBudget):  # only the head's reading lets it out
        return f"the response head is larger than {MAX_HEAD_BYTES} bytes"
    if isinstance(failed, http.client.HTTPException):
        return f"not a valid HTTP response ({type(failed).__name__})"
    return f"connection failed: {failed.strerror or failed}"


def _request_headers(user_headers: Mapping[str, str], signature: dict[str, str]) -> dict[str, str]:
    """The endpoint's own headers (checked, so http.client never echoes a bad value back in an error)
    under Meterline's content type, user agent and signature."""
    merged: dict[str, str] = {}
    for name, value in user_headers.items():
        valid_value = isinstance(value, str) and not _LINE_BREAK_OR_NUL.search(value) and _is_latin1(value)
        if not (isinstance(name, str) and _HEADER_NAME.fullmatch(name) and valid_value):
            raise ValueError(f"endpoint header {str(name)[:64]!r} is not a valid HTTP header")
        if not is_reserved_header(name):
            merged[name] = value
    return {**merged, "Content-Type": "application/json", "User-Agent": USER_AGENT, **signature}


def _is_latin1(value: str) -> bool:
    try:
        value.encode("latin-1")  # how http.client encodes header values
    except UnicodeEncodeError:
        return False
    return True


class _Deadline:
    """An attempt's absolute deadline (time.monotonic()). `remaining()` is what an operation may still
    wait; a watchdog timer shuts the guarded socket down at the deadline, so nothing blocked in it
    (whatever its own timeout) outlives the deadline by more than the timer's wake-up."""

    def __init__(self, at: float) -> None:
        self.at = at
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def remaining(self) -> float:
        """Seconds left; TimeoutError when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def guard(self, sock: socket.socket | None) -> None:
        """Shut `sock` down at the deadline (instead of the socket guarded before). A socket is unguarded
        (None) before it is closed: its descriptor's number, once reused by another socket, must never be
        shut down."""
        with self._lock:
            self._sock = sock
        if sock is not None and self.passed():
            self._expire()

    def cancel(self) -> None:
        """The attempt is over: stop the timer and let go of the socket."""
        self._timer.cancel()
        self.guard(None)

    def _expire(self) -> None:
        with self._lock:
            if self._sock is not None:
                # socket.socket's own shutdown, also for a TLS socket: it ends the connection under a
                # blocked SSL call without tearing the SSL object from under it. OSError: not connected yet.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


def _before(deadline: _Deadline, call: Callable[[], _T]) -> _T:
    """`call()` (a DNS lookup, which no socket timeout bounds), given until the deadline: it runs in a
    thread of its own, left to finish alone when the receiver's name servers are slower than that."""
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed over to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="webhook-lookup", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if failure:
        raise failure[0]
    if not outcome:
        raise TimeoutError
    return outcome[0]


def _exchange(
    target: Target, addresses: list[tuple[str, int]], body: bytes, headers: dict[str, str], deadline: _Deadline
) -> tuple[int, str]:
    """Send the request to the first vetted address that accepts a connection; return the status and,
    for a failure, an excerpt of the response body."""
    connection = _connect(target, addresses, deadline)
    sock = connection.sock
    assert sock is not None
    try:
        sock.settimeout(deadline.remaining())
        connection.request("POST", target.path, body=body, headers=headers)
        stream = _BoundedStream(sock, deadline, MAX_HEAD_BYTES)
        # Read by hand rather than getresponse(): the response reads through `stream`, never straight
        # from the socket (http.client would wait on each read with the socket's timeout afresh).
        response = http.client.HTTPResponse(cast(socket.socket, _Source(stream)), method="POST")
        try:
            response.begin()  # the head, complete: its status counts
            if 200 <= response.status < 400:
                return response.status, ""
            stream.budget = MAX_BODY_BYTES
            return response.status, _excerpt(response)
        finally:
            response.close()
    finally:
        deadline.cancel()
        connection.close()


def _excerpt(response: http.client.HTTPResponse) -> str:
    """The start of a failure's body, whitespace collapsed, from what arrives before the deadline and
    within the byte budget: a courtesy, so a body cut short (or unreadable) still leaves the status."""
    received = b""
    try:
        while len(received) < MAX_BODY_BYTES:
            chunk = response.read1(MAX_BODY_BYTES - len(received))
            if not chunk:
                break
            received += chunk
            if len(_collapsed(received)) > ERROR_EXCERPT_CHARS:
                break  # enough for the excerpt
    except (OSError, http.client.HTTPException):
        pass
    return _collapsed(received)[:ERROR_EXCERPT_CHARS]


def _collapsed(body: bytes) -> str:
    return " ".join(body.decode("utf-8", "replace").split())


class _OverBudget(http.client.HTTPException):
    """The response is longer than the bytes allowed for what is being read."""


class _BoundedStream(io.RawIOBase):
    """The response as http.client reads it: each read waits at most until the deadline, and no more
    than `budget` bytes are read from the socket (one read more raises _OverBudget)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, budget: int) -> None:
        self.sock, self.deadline, self.budget = sock, deadline, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.budget <= 0:
            raise _OverBudget
        self.sock.settimeout(self.deadline.remaining())
        count = self.sock.recv_into(buffer, min(memoryview(buffer).nbytes, self.budget))
        self.budget -= count
        return count


class _Source:
    """What http.client.HTTPResponse takes for a socket: something with makefile()."""

    def __init__(self, stream: _BoundedStream) -> None:
        self.stream = stream

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self.stream)


def _connect(target: Target, addresses: list[tuple[str, int]], deadline: _Deadline) -> http.client.HTTPConnection:
    last_error: OSError = ConnectionError("no address to connect to")
    for ip, port in addresses:
        pinned = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        connection = pinned(target.host, port, ip, deadline)
        try:
            connection.connect()
            return connection
        except OSError as failed:  # refused, unreachable, TLS: try the next address
            connection.close()
            if isinstance(failed, TimeoutError) or deadline.passed():
                raise  # the time is spent: no point trying the next address
            last_error = failed
    raise last_error


def _dial(ip: str, port: int, deadline: _Deadline) -> socket.socket:
    """A TCP connection to exactly `ip` (no name lookup happens here), guarded by the deadline."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        deadline.guard(sock)
        sock.settimeout(deadline.remaining())
        sock.connect((ip, port))
    except BaseException:
        deadline.guard(None)
        sock.close()
        raise
    return sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # system CAs, hostname checking on


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP (local development with allow_loopback only) to a vetted IP."""

    def __init__(self, host: str, port: int, vetted_ip: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.remaining())
        self.vetted_ip = vetted_ip
        self.deadline = deadline

    def connect(self) -> None:
        self.sock = _dial(self.vetted_ip, self.port, self.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted IP; SNI and the certificate check use the URL's hostname (`host`)."""

    def __init__(self, host: str, port: int, vetted_ip: str, deadline: _Deadline) -> None:
        self.tls_context = _tls_context()
        super().__init__(host, port, timeout=deadline.remaining(), context=self.tls_context)
        self.vetted_ip = vetted_ip
        self.deadline = deadline

    def connect(self) -> None:
        sock = _dial(self.vetted_ip, self.port, self.deadline)
        try:
            # The handshake runs after wrapping, so the watchdog guards the TLS socket while it does.
            tls = self.tls_context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        except BaseException:
            self.deadline.guard(None)
            sock.close()
            raise
        try:
            self.deadline.guard(tls)
            tls.settimeout(self.deadline.remaining())
            tls.do_handshake()
        except BaseException:
            self.deadline.guard(None)
            tls.close()
            raise
        self.sock = tls
