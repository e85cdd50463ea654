"""Entitlements over HTTP. Today the features they are made of: POST/GET /api/v1/features,
GET/DELETE /api/v1/features/{idOrKey}."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import features_store, meters_store
from meterline.domain.features import feature_definition
from meterline.domain.timeutil import now_ms
from meterline.http.requests import json_object, query_model
from meterline.http.resolver import build_resolver, namespace_of
from meterline.http.responses import json_response
from meterline.observability import http_handler
from meterline.services import features

app = build_resolver()


@app.post("/api/v1/features")
def create_feature() -> Response:
    definition = feature_definition(json_object(app.current_event, "a feature"))
    created = features.create_feature(features_store(), meters_store(), namespace_of(app), definition, now_ms())
    return json_response(created.to_api(), status=201)


@app.get("/api/v1/features")
def list_features() -> Response:
    query = query_model(app.current_event, features.ListFeaturesQuery)
    return json_response(features.list_features(features_store(), namespace_of(app), query))


@app.get("/api/v1/features/<feature_id>")
def get_feature(feature_id: str) -> Response:
    return json_response(features.get_feature(features_store(), namespace_of(app), feature_id).to_api())


@app.delete("/api/v1/features/<feature_id>")
def delete_feature(feature_id: str) -> Response:
    features.archive_feature(features_store(), namespace_of(app), feature_id, now_ms())
    return Response(status_code=204)


@http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
