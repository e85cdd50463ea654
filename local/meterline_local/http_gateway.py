"""A local stand-in for API Gateway (HTTP API, payload format 2.0): each HTTP request becomes a v2
event for the function that owns the route, and the function's result becomes the HTTP response."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from meterline_local.lambda_runtime import LocalFunction

log = logging.getLogger("dev.http")

# API Gateway HTTP APIs accept request bodies up to 10 MB.
MAX_REQUEST_BYTES = 10 * 1024 * 1024


class Route:
    def __init__(self, method: str, template: str, function: LocalFunction) -> None:
        self.method = method
        self.template = template
        self.function = function
        pattern = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(template))
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        self._regex = re.compile(f"^{pattern}$")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        m = self._regex.match(path)
        return {k: unquote(v) for k, v in m.groupdict().items()} if m else None


def build_v2_event(method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]], body: bytes,
                   route: Route | None, path_parameters: dict[str, str], source_ip: str) -> dict[str, Any]:
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value  # as API Gateway joins them
    route_key = f"{route.method} {route.template}" if route else "$default"
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": merged.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


class LocalAuthorizer:
    """API Gateway's side of a Lambda authorizer (payload 2.0, simple responses), identity source the
    Authorization header: without the header the request is 401 `{"message":"Unauthorized"}` and the
    authorizer is not called; `isAuthorized: false` is 403 `{"message":"Forbidden"}`; otherwise its
    context reaches the route as `requestContext.authorizer.lambda`. Answers are cached per header
    value for `cache_s`, as `AuthorizerResultTtlInSeconds` does."""

    def __init__(self, invoke: Callable[[dict[str, Any]], Any], cache_s: float = 60.0) -> None:
        self.invoke = invoke
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def authorize(self, event: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        """None when the request may proceed (`event` then carries the context), else the answer."""
        identity = event["headers"].get("authorization")
        if not identity:
            return 401, {"content-type": "application/json"}, b'{"message":"Unauthorized"}'
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(identity)
        if cached is None or cached[0] <= now:
            request = {**event, "type": "REQUEST", "identitySource": [identity],
                       "routeArn": f"arn:aws:execute-api:us-east-1:000000000000:local/$default/"
                                   f"{event['requestContext']['http']['method']}{event['rawPath']}"}
            result = self.invoke(request)
            with self._lock:
                self._cache[identity] = (now + self.cache_s, result)
        else:
            result = cached[1]
        if not isinstance(result, dict) or result.get("isAuthorized") is not True:
            return 403, {"content-type": "application/json"}, b'{"message":"Forbidden"}'
        event["requestContext"]["authorizer"] = {"lambda": dict(result.get("context") or {})}
        return None


def _problem(status: int, title: str, detail: str) -> tuple[int, dict[str, str], bytes]:
    body = {"type": "urn:meterline:problem:gateway", "title": title, "status": status, "detail": detail}
    return status, {"content-type": "application/problem+json"}, orjson.dumps(body)


def to_http_response(result: Any) -> tuple[int, dict[str, str], list[str], bytes]:
    """Interpret a v2 handler result as API Gateway does (a non-dict or status-less dict is JSON 200)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"content-type": "application/json"}, [], orjson.dumps(result)
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ",".join(str(v) for v in values)
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return int(result["statusCode"]), headers, list(result.get("cookies") or []), raw


class LocalGateway(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], routes: list[Route], authorizer: LocalAuthorizer | None = None
                 ) -> None:
        self.routes = routes
        self.authorizer = authorizer
        super().__init__(address, _GatewayHandler)

    def find(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None, {}


class _GatewayHandler(BaseHTTPRequestHandler):
    server: LocalGateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # one line per request is logged by _serve

    def _serve(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        status, headers, cookies, body = self._dispatch(url.path, url.query)
        self.send_response(status)
        for key, value in headers.items():
            if key not in ("content-length", "connection"):
                self.send_header(key, value)
        for cookie in cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log.info('%s "%s %s" %d %.1fms', self.client_address[0], self.command, self.path, status,
                 (time.perf_counter() - started) * 1000)

    def _dispatch(self, path: str, query: str) -> tuple[int, dict[str, str], list[str], bytes]:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            status, headers, raw = _problem(413, "Request too large",
                                            f"the gateway accepts at most {MAX_REQUEST_BYTES} bytes")
            return status, headers, [], raw
        body = self.rfile.read(length) if length else b""
        route, params = self.server.find(self.command, path)
        if route is None:
            status, headers, raw = _problem(404, "Not found", f"no route for {self.command} {path}")
            return status, headers, [], raw
        event = build_v2_event(self.command, path, query, list(self.headers.items()), body, route, params,
                               self.client_address[0])
        try:
            if self.server.authorizer is not None:
                refused = self.server.authorizer.authorize(event)
                if refused is not None:
                    return refused[0], refused[1], [], refused[2]
            result = route.function.invoke(event)
        except Exception:  # an unhandled handler error is a 500 from API Gateway too
            log.exception("function %s failed", route.function.name)
            status, headers, raw = _problem(500, "Internal Server Error", "the function failed")
            return status, headers, [], raw
        return to_http_response(result)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve
