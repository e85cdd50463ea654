"""A fake of the two OpenMeter v1 routes the client uses, POST /api/v1/events and GET .../value: in process as
an httpx transport (`FakeMeterlineAPI.transport()`), or on a real socket (`serve`) for a client in another
process. It stores events once per (source, id) as the real API does, and can be told to fail."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx

PROBLEM_JSON = {"content-type": "application/problem+json"}


def problem(status: int, detail: str, **extensions: Any) -> httpx.Response:
    return httpx.Response(status, headers=PROBLEM_JSON,
                          json={"type": "about:blank", "title": "Error", "status": status, "detail": detail,
                                **extensions})


class FakeMeterlineAPI:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[list[dict[str, Any]]] = []  # every POST's events, failed attempts included
        self.requests: list[httpx.Request] = []
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.scripted: deque[httpx.Response | Exception] = deque()  # answers to the next POSTs, in order
        self.down = False  # every POST fails to connect
        self.max_batch: int | None = None  # larger batches are answered 413
        self.values: dict[tuple[str, str], dict[str, Any]] = {}  # entitlement values by (subject, feature)
        self.value_requests: list[httpx.Request] = []
        self.scripted_values: deque[httpx.Response | Exception] = deque()  # answers to the next value GETs

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def stored_events(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.stored.values())

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            if request.method == "POST" and request.url.path == "/api/v1/events":
                return self._ingest(request)
            if request.method == "GET" and request.url.path.endswith("/value"):
                return self._value(request)
        return problem(404, f"no route {request.method} {request.url.path}")

    def _ingest(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)
        self.batches.append(events)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.scripted:
            answer = self.scripted.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        if self.max_batch is not None and len(events) > self.max_batch:
            return problem(413, f"at most {self.max_batch} events per request")
        for event in events:
            self.stored.setdefault((event["source"], event["id"]), event)
        return httpx.Response(204)

    def _value(self, request: httpx.Request) -> httpx.Response:
        self.value_requests.append(request)
        if self.scripted_values:
            answer = self.scripted_values.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        parts = request.url.raw_path.decode().split("?")[0].split("/")  # /api/v1/subjects/{s}/entitlements/{f}/value
        subject, feature = unquote(parts[4]), unquote(parts[6])
        if (subject, feature) not in self.values:
            return problem(404, f"there is no entitlement {feature!r} of subject {subject!r}")
        return httpx.Response(200, json=self.values[(subject, feature)])


@contextmanager
def serve(api: FakeMeterlineAPI) -> Iterator[str]:
    """`api` on 127.0.0.1 over real HTTP; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer()

        def do_GET(self) -> None:  # noqa: N802
            self._answer()

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            request = httpx.Request(self.command, f"http://fake{self.path}", headers=dict(self.headers), content=body)
            try:
                response = api.handle(request)
            except httpx.TransportError:
                self.close_connection = True
                return
            content = response.read()
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
