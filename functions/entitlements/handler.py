"""Entitlements over HTTP (OpenMeter's v1 API): features, subjects, subject entitlements with their
grants, values, history and resets, namespace-wide entitlement and grant listings, and the customer
aliases OpenMeter's Python SDK calls (a customer is a subject key here)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import entitlements_context, features_store, meters_store, subjects_store
from meterline.domain.entitlements import ResetInput, entitlement_input, grant_input
from meterline.domain.features import feature_definition
from meterline.domain.timeutil import now_ms
from meterline.domain.validation import QueryParameters
from meterline.http.requests import body_model, json_body, json_object, query_model
from meterline.http.resolver import build_resolver, namespace_of
from meterline.http.responses import json_response
from meterline.observability import http_handler
from meterline.services import entitlements, features, subjects

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


def _subject(subject: str) -> str:
    return entitlements.subject_key(entitlements_context(), namespace_of(app), subject)


@app.post("/api/v1/subjects/<subject>/entitlements")
def create_entitlement(subject: str) -> Response:
    given = entitlement_input(json_object(app.current_event, "an entitlement"))
    created = entitlements.create_entitlement(entitlements_context(), namespace_of(app), _subject(subject), given,
                                              now_ms())
    return json_response(created, status=201)


@app.get("/api/v1/subjects/<subject>/entitlements")
def list_subject_entitlements(subject: str) -> Response:
    query = query_model(app.current_event, entitlements.SubjectEntitlementsQuery)
    return json_response(entitlements.list_subject_entitlements(entitlements_context(), namespace_of(app),
                                                                _subject(subject), query, now_ms()))


@app.get("/api/v1/subjects/<subject>/entitlements/<entitlement_id>")
def get_subject_entitlement(subject: str, entitlement_id: str) -> Response:
    query_model(app.current_event, NoParameters)
    return json_response(entitlements.get_subject_entitlement(entitlements_context(), namespace_of(app),
                                                              _subject(subject), entitlement_id, now_ms()))


@app.delete("/api/v1/subjects/<subject>/entitlements/<entitlement_id>")
def delete_entitlement(subject: str, entitlement_id: str) -> Response:
    entitlements.delete_entitlement(entitlements_context(), namespace_of(app), _subject(subject), entitlement_id,
                                    now_ms())
    return Response(status_code=204)


@app.put("/api/v1/subjects/<subject>/entitlements/<id_or_feature>/override")
def override_entitlement(subject: str, id_or_feature: str) -> Response:
    given = entitlement_input(json_object(app.current_event, "an entitlement"))
    created = entitlements.override_entitlement(entitlements_context(), namespace_of(app), _subject(subject),
                                                id_or_feature, given, now_ms())
    return json_response(created, status=201)


@app.get("/api/v1/subjects/<subject>/entitlements/<id_or_feature>/value")
def entitlement_value(subject: str, id_or_feature: str) -> Response:
    query = query_model(app.current_event, entitlements.ValueQuery)
    return json_response(entitlements.entitlement_value(entitlements_context(), namespace_of(app), _subject(subject),
                                                        id_or_feature, query, now_ms()))


@app.get("/api/v1/subjects/<subject>/entitlements/<entitlement_id>/history")
def entitlement_history(subject: str, entitlement_id: str) -> Response:
    query = query_model(app.current_event, entitlements.HistoryQuery)
    return json_response(entitlements.history(entitlements_context(), namespace_of(app), _subject(subject),
                                              entitlement_id, query, now_ms()))


@app.post("/api/v1/subjects/<subject>/entitlements/<entitlement_id>/reset")
def reset_entitlement(subject: str, entitlement_id: str) -> Response:
    given = body_model(app.current_event, ResetInput, "a reset")
    entitlements.reset(entitlements_context(), namespace_of(app), _subject(subject), entitlement_id, given, now_ms())
    return Response(status_code=204)


@app.post("/api/v1/subjects/<subject>/entitlements/<id_or_feature>/grants")
def create_grant(subject: str, id_or_feature: str) -> Response:
    given = grant_input(json_object(app.current_event, "a grant"))
    created = entitlements.create_grant(entitlements_context(), namespace_of(app), _subject(subject), id_or_feature,
                                        given, now_ms())
    return json_response(created, status=201)


@app.get("/api/v1/subjects/<subject>/entitlements/<id_or_feature>/grants")
def list_subject_grants(subject: str, id_or_feature: str) -> Response:
    query = query_model(app.current_event, entitlements.SubjectGrantsQuery)
    return json_response(entitlements.list_subject_grants(entitlements_context(), namespace_of(app),
                                                          _subject(subject), id_or_feature, query, now_ms()))


@app.get("/api/v1/entitlements")
def list_entitlements() -> Response:
    query = query_model(app.current_event, entitlements.ListEntitlementsQuery)
    return json_response(entitlements.list_entitlements(entitlements_context(), namespace_of(app), query, now_ms()))


@app.get("/api/v1/entitlements/<entitlement_id>")
def get_entitlement(entitlement_id: str) -> Response:
    query_model(app.current_event, NoParameters)
    return json_response(entitlements.get_entitlement(entitlements_context(), namespace_of(app), entitlement_id,
                                                      now_ms()))


@app.get("/api/v1/grants")
def list_grants() -> Response:
    query = query_model(app.current_event, entitlements.ListGrantsQuery)
    return json_response(entitlements.list_grants(entitlements_context(), namespace_of(app), query, now_ms()))


@app.delete("/api/v1/grants/<grant_id>")
def void_grant(grant_id: str) -> Response:
    query = query_model(app.current_event, entitlements.VoidQuery)
    entitlements.void_grant(entitlements_context(), namespace_of(app), grant_id, query, now_ms())
    return Response(status_code=204)


@app.get("/api/v1/customers/<customer>/entitlements/<feature_key>/value")
def customer_value(customer: str, feature_key: str) -> Response:
    query = query_model(app.current_event, entitlements.ValueQuery)
    return json_response(entitlements.customer_value(entitlements_context(), namespace_of(app), customer,
                                                     feature_key, query, now_ms()))


@app.get("/api/v1/customers/<customer>/access")
def customer_access(customer: str) -> Response:
    query_model(app.current_event, NoParameters)
    return json_response(entitlements.customer_access(entitlements_context(), namespace_of(app), customer, now_ms()))


@http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
