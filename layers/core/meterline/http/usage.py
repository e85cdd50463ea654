"""Usage queries over HTTP: their parameters from a query string or a JSON body, and their result as JSON
or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from meterline.domain.query_plan import UsageQuery
from meterline.domain.timeutil import format_ms
from meterline.domain.validation import invalid
from meterline.errors import FieldError
from meterline.http.requests import body_model, multi_query, query_params_model
from meterline.http.responses import json_response
from meterline.services.usage_query import SUBJECT, UsageQueryParameters

CSV = "text/csv"
_LIST_PARAMS = {"subject", "groupBy"}


def usage_query_params(event: BaseProxyEvent) -> UsageQueryParameters:
    """A usage query's parameters: from the query string of a GET (repeated `subject` and `groupBy`,
    `groupBy=a,b`, `filterGroupBy[key]=value` or `filterGroupBy` as a JSON object), or the JSON body of
    a POST."""
    if event.http_method == "POST":
        return body_model(event, UsageQueryParameters, "a query", unknown="is not a supported query field")
    params: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in multi_query(event):
        if name.startswith("filterGroupBy[") and name.endswith("]"):
            params.setdefault("filterGroupBy", {}).setdefault(name[14:-1], []).append(value)
        elif name == "filterGroupBy":
            try:
                decoded = orjson.loads(value)
            except orjson.JSONDecodeError:
                decoded = None
            if not isinstance(decoded, dict):
                errors.append(FieldError("filterGroupBy", "must be filterGroupBy[key]=value or a JSON object"))
                continue
            for key, values in decoded.items():
                params.setdefault("filterGroupBy", {}).setdefault(key, []).extend(
                    values if isinstance(values, list) else [values])
        elif name == "groupBy":
            params.setdefault(name, []).extend(part for part in value.split(",") if part)
        elif name in _LIST_PARAMS:
            params.setdefault(name, []).append(value)
        elif name in params:
            errors.append(FieldError(name, "must be given once"))
        else:
            params[name] = value
    if errors:
        raise invalid(errors)
    return query_params_model(params, UsageQueryParameters)


def usage_response(query: UsageQuery, rows: list[dict[str, Any]], accept: str | None) -> Response:
    """OpenMeter's query result, or CSV (one row per window, subject and group) when the caller accepts it."""
    if CSV in (accept or ""):
        return Response(status_code=200, content_type=CSV, body=_usage_csv(query, rows))
    return json_response({
        "from": format_ms(query.from_ms),
        "to": format_ms(query.to_ms),
        "windowSize": query.window_size.value if query.window_size else None,
        "data": rows,
    })


def _usage_csv(query: UsageQuery, rows: list[dict[str, Any]]) -> str:
    keys = [k for k in query.group_by if k != SUBJECT]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["window_start", "window_end", "subject", *keys, "value"])
    for row in rows:
        writer.writerow([row["windowStart"], row["windowEnd"], row["subject"] or "",
                         *(row["groupBy"].get(k, "") for k in keys), _csv_number(row["value"])])
    return out.getvalue()


def _csv_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
