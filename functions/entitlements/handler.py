"""Entitlements over HTTP. Today what they are made of: features (POST/GET /api/v1/features,
GET/DELETE /api/v1/features/{idOrKey}) and subjects (POST/GET /api/v1/subjects,
GET/DELETE /api/v1/subjects/{idOrKey})."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import features_store, meters_store, subjects_store
from meterline.domain.features import feature_definition
from meterline.domain.timeutil import now_ms
from meterline.domain.validation import QueryParameters
from meterline.http.requests import json_body, json_object, query_model
from meterline.http.resolver import build_resolver, namespace_of
from meterline.http.responses import json_response
from meterline.observability import http_handler
from meterline.services import features, subjects

app = build_resolver()


class NoParameters(QueryParameters):
    """A list that takes no query parameters (each one given is named in a 400)."""


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


@app.post("/api/v1/subjects")
def upsert_subjects() -> Response:
    given = subjects.parse_subjects(json_body(app.current_event))
    return json_response(subjects.upsert_subjects(subjects_store(), namespace_of(app), given, now_ms()))


@app.get("/api/v1/subjects")
def list_subjects() -> Response:
    query_model(app.current_event, NoParameters)
    return json_response(subjects.list_subjects(subjects_store(), namespace_of(app)))


@app.get("/api/v1/subjects/<subject>")
def get_subject(subject: str) -> Response:
    return json_response(subjects.get_subject(subjects_store(), namespace_of(app), subject))


@app.delete("/api/v1/subjects/<subject>")
def delete_subject(subject: str) -> Response:
    subjects.delete_subject(subjects_store(), namespace_of(app), subject)
    return Response(status_code=204)


@http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
