"""What handlers answer: JSON and problem+json. The JS SDK
accepts only `application/json` and `application/problem+json` exactly, so no charset is added."""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools.event_handler import Response

from meterline.domain.events import JSON
from meterline.errors import FieldError
from meterline.http.problems import PROBLEM_JSON, problem_body


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status_code=status, content_type=JSON, body=orjson.dumps(payload).decode())


def problem_response(status: int, kind: str, title: str, detail: str,
                     errors: list[FieldError] | None = None) -> Response:
    return Response(status_code=status, content_type=PROBLEM_JSON,
                    body=orjson.dumps(problem_body(status, kind, title, detail, errors)).decode())
