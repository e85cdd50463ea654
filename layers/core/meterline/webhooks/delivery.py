"""POST one signed webhook to a user's endpoint, and say how it went.

The connection goes only to an address `EndpointPolicy.vetted_addresses` returned a moment before:
the socket is opened to that IP, never to the hostname, so a DNS answer that changes between the
check and the connect (rebinding) cannot reach a private address. TLS still uses the URL's hostname
for SNI and certificate verification. Redirects are not followed (a redirect could point anywhere).
"""

from __future__ import annotations

import functools
import http.client
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from meterline.domain.reports import is_reserved_header
from meterline.webhooks.endpoints import EndpointPolicy, RefusedEndpoint, Target, parse_target
from meterline.webhooks.signing import signature_headers

USER_AGENT = "Meterline-Webhooks/1"
MAX_RESPONSE_BYTES = 4096
ERROR_EXCERPT_CHARS = 200
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")


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
    come back as a failed attempt, never as an exception. `timeout_s` bounds the connect and each wait for the server
    (measured from the start of the call); a server trickling bytes slowly can stretch it."""
    started = time.monotonic()

    def finished(status_code: int | None, error: str | None) -> WebhookAttempt:
        return WebhookAttempt(status_code, error, int((time.monotonic() - started) * 1000))

    signature = signature_headers(secret, webhook_id, body, at or datetime.now(UTC))
    try:
        request_headers = _request_headers(headers or {}, signature)
    except ValueError as unfit:
        return finished(None, str(unfit))
    try:
        addresses = policy.vetted_addresses(url)
    except RefusedEndpoint as refused:
        return finished(None, f"refused: {refused}")

    try:
        status, excerpt = _exchange(parse_target(url), addresses, body, request_headers, deadline=started + timeout_s)
    except TimeoutError:
        return finished(None, f"timed out after {timeout_s:g} s")
    except ssl.SSLCertVerificationError as failed:
        return finished(None, f"TLS certificate not accepted: {failed.verify_message}")
    except ssl.SSLError as failed:
        return finished(None, f"TLS failed: {failed.reason or failed}")
    except ConnectionRefusedError:
        return finished(None, "connection refused")
    except http.client.HTTPException as failed:
        return finished(None, f"not a valid HTTP response ({type(failed).__name__})")
    except OSError as failed:
        return finished(None, f"connection failed: {failed.strerror or failed}")

    if 200 <= status < 300:
        return finished(status, None)
    if 300 <= status < 400:
        return finished(status, f"HTTP {status}: redirects are not followed")
    return finished(status, f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}")


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


def _exchange(
    target: Target, addresses: list[tuple[str, int]], body: bytes, headers: dict[str, str], *, deadline: float
) -> tuple[int, str]:
    """Send the request to the first vetted address that accepts a connection; return the status and,
    for a failure, an excerpt of the response body."""
    connection = _connect(target, addresses, deadline)
    sock = connection.sock  # kept: http.client drops its reference when the server closes the connection
    try:
        sock.settimeout(_remaining(deadline))
        connection.request("POST", target.path, body=body, headers=headers)
        sock.settimeout(_remaining(deadline))
        response = connection.getresponse()
        if 200 <= response.status < 400:
            return response.status, ""
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.05))  # the status is in; the body is only a courtesy
            head = response.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException):
            head = b""
        return response.status, " ".join(head.decode("utf-8", "replace").split())[:ERROR_EXCERPT_CHARS]
    finally:
        connection.close()


def _connect(target: Target, addresses: list[tuple[str, int]], deadline: float) -> http.client.HTTPConnection:
    last_error: OSError = ConnectionError("no address to connect to")
    for ip, port in addresses:
        pinned = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        connection = pinned(target.host, port, ip, timeout=_remaining(deadline))
        try:
            connection.connect()
            return connection
        except TimeoutError:
            connection.close()
            raise  # the time is spent: no point trying the next address
        except OSError as failed:  # refused, unreachable, TLS: try the next address
            connection.close()
            last_error = failed
    raise last_error


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _dial(ip: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to exactly `ip` (no name lookup happens here)."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # system CAs, hostname checking on


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP (local development with allow_loopback only) to a vetted IP."""

    def __init__(self, host: str, port: int, vetted_ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.vetted_ip = vetted_ip

    def connect(self) -> None:
        self.sock = _dial(self.vetted_ip, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted IP; SNI and the certificate check use the URL's hostname (`host`)."""

    def __init__(self, host: str, port: int, vetted_ip: str, timeout: float) -> None:
        self.tls_context = _tls_context()
        super().__init__(host, port, timeout=timeout, context=self.tls_context)
        self.vetted_ip = vetted_ip

    def connect(self) -> None:
        sock = _dial(self.vetted_ip, self.port, self.timeout)
        try:
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
