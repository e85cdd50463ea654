"""post_webhook against a real HTTP(S) server on 127.0.0.1 that checks every signature with the
Standard Webhooks library and records what reached it."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from meterline.webhooks import EndpointPolicy, RetryPolicy, WebhookAttempt, delivery, new_signing_secret, post_webhook

SECRET = new_signing_secret()
BODY = json.dumps({"subject": "customer-1", "usage": [{"meter": "tokens", "value": 42}]}).encode()
LOCAL_DEV = EndpointPolicy(allow_loopback=True)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    port: int
    requests: list[Received] = field(default_factory=list)
    release_slow: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)  # SNI seen by the TLS receiver

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver  # set per server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except Exception:
            verified = False
        self.receiver.requests.append(Received(self.path, headers, body, verified))
        if self.path == "/slow":
            self.receiver.release_slow.wait(5)
        status, extra, reply = {
            "/ok": (200, {}, b'{"received": true}'),
            "/no-content": (204, {}, b""),
            "/fail": (500, {}, b"database\n  is down " + b"x" * 5000),
            "/redirect": (302, {"Location": self.receiver.url("/ok")}, b""),
            "/slow": (200, {}, b""),
        }[self.path]
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {}))
    receiver = Receiver(port=server.server_address[1])
    server.RequestHandlerClass.receiver = receiver  # type: ignore[attr-defined]
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: receiver.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield receiver
    receiver.release_slow.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


def post(url: str, **overrides: Any) -> WebhookAttempt:
    arguments: dict[str, Any] = {"webhook_id": "msg_1", "secret": SECRET, "policy": LOCAL_DEV, "timeout_s": 2.0}
    return post_webhook(url, BODY, **(arguments | overrides))


@pytest.mark.parametrize(("path", "status"), [("/ok", 200), ("/no-content", 204)])
def test_2xx_is_a_success_with_a_verified_signature(receiver: Receiver, path: str, status: int) -> None:
    attempt = post(receiver.url(path), webhook_id="msg_2xx")
    assert (attempt.ok, attempt.status_code, attempt.error) == (True, status, None)
    [request] = receiver.requests
    assert request.verified
    assert request.body == BODY
    assert request.headers["webhook-id"] == "msg_2xx"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Meterline-Webhooks/1"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"


def test_500_is_a_failure_with_status_and_body_excerpt(receiver: Receiver) -> None:
    attempt = post(receiver.url("/fail"))
    assert not attempt.ok
    assert attempt.status_code == 500
    assert attempt.error == "HTTP 500: database is down " + "x" * (200 - len("database is down "))


def test_a_slow_server_times_out_within_the_timeout(receiver: Receiver) -> None:
    attempt = post(receiver.url("/slow"), timeout_s=0.3)
    assert (attempt.ok, attempt.status_code, attempt.error) == (False, None, "timed out after 0.3 s")
    assert 250 <= attempt.duration_ms < 1500
    assert len(receiver.requests) == 1  # it did arrive; the answer never came in time


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    attempt = post(receiver.url("/redirect"))
    assert (attempt.ok, attempt.status_code, attempt.error) == (False, 302, "HTTP 302: redirects are not followed")
    assert [request.path for request in receiver.requests] == ["/redirect"]


def test_connection_refused_is_an_error_not_an_exception() -> None:
    with socket.socket() as probe:  # a port nobody listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = post(f"http://127.0.0.1:{port}/ok")
    assert (attempt.ok, attempt.status_code, attempt.error) == (False, None, "connection refused")


def test_user_headers_are_sent_but_cannot_replace_meterline_headers(receiver: Receiver) -> None:
    user_headers = {
        "Authorization": "Bearer user-token",
        "X-Tenant": "acme",
        "Webhook-Id": "forged",
        "webhook-signature": "v1,forged",
        "Content-Type": "text/plain",
        "User-Agent": "curl/8",
        "Host": "evil.example",
        "Content-Length": "1",
    }
    attempt = post(receiver.url("/ok"), webhook_id="msg_real", headers=user_headers)
    assert attempt.ok
    [request] = receiver.requests
    assert request.verified
    assert request.headers["authorization"] == "Bearer user-token"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["webhook-id"] == "msg_real"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Meterline-Webhooks/1"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.body == BODY


def test_a_header_unfit_for_http_fails_without_a_request(receiver: Receiver) -> None:
    attempt = post(receiver.url("/ok"), headers={"X-Token": "secret\r\nX-Injected: 1"})
    assert (attempt.status_code, attempt.error) == (None, "endpoint header 'X-Token' is not a valid HTTP header")
    assert "secret" not in attempt.error
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("scheme", "error"),
    [("http", "refused: must use https"), ("https", "refused: host 127.0.0.1 is a loopback address")],
)
def test_without_allow_loopback_the_request_never_leaves(receiver: Receiver, scheme: str, error: str) -> None:
    attempt = post(receiver.url("/ok", scheme), policy=EndpointPolicy(allow_loopback=False))
    assert (attempt.ok, attempt.status_code, attempt.error) == (False, None, error)
    assert receiver.requests == []


def test_retry_policy_timeout_is_usable_as_timeout_s(receiver: Receiver) -> None:
    assert post(receiver.url("/ok"), timeout_s=RetryPolicy().timeout_seconds).ok


# --- HTTPS: the socket goes to the vetted IP, TLS speaks to the URL's hostname ---------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.test (key file, certificate file)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "key.pem", folder / "cert.pem"


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    key_file, cert_file = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))  # the default context, trusting our CA
    monkeypatch.setattr(delivery, "_tls_context", lambda: client_context)
    yield from _serve(server_context)


@pytest.fixture
def dns_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake DNS: *.test names are 127.0.0.1. Records every lookup."""
    lookups: list[str] = []

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        if not host.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return lookups


def test_https_connects_to_the_vetted_address_with_the_hostname_for_tls(
    tls_receiver: Receiver, dns_lookups: list[str]
) -> None:
    attempt = post(tls_receiver.url("/ok", "https", "hooks.test"))
    assert (attempt.ok, attempt.error) == (True, None)
    assert dns_lookups == ["hooks.test"]  # looked up once, by the policy; the connection did not ask DNS again
    assert tls_receiver.server_names == ["hooks.test"]
    [request] = tls_receiver.requests
    assert request.verified
    assert request.headers["host"] == f"hooks.test:{tls_receiver.port}"


def test_https_refuses_a_certificate_for_another_name(tls_receiver: Receiver, dns_lookups: list[str]) -> None:
    attempt = post(tls_receiver.url("/ok", "https", "other.test"))
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("TLS certificate not accepted: Hostname mismatch")
    assert tls_receiver.requests == []
