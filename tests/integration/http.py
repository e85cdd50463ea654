"""Calling the real HTTP handlers with API Gateway v2 events, as the gateway builds them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from meterline_local.http_gateway import build_v2_event, to_http_response
from tests.conftest import lambda_context


class Reply:
    def __init__(self, result: Any) -> None:
        self.status, self.headers, _, self.body = to_http_response(result)

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def call(handler_module: Any, method: str, path: str, *, body: Any = None, content_type: str | None = None,
         query: dict[str, str] | None = None, raw_body: bytes | None = None) -> Reply:
    data = raw_body if raw_body is not None else (orjson.dumps(body) if body is not None else b"")
    headers = [("host", "localhost")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    event = build_v2_event(method, path, urlencode(query or {}), headers, data, None, {}, "127.0.0.1")
    return Reply(handler_module.handler(event, lambda_context()))
