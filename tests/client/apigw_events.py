"""API Gateway proxy events in the shapes AWS documents: HTTP API payload format 2.0 ("Working with AWS Lambda
proxy integrations for HTTP APIs") and REST API format 1.0 ("Input format of a Lambda function for proxy
integration"), with the authorizer context of JWT, Lambda and IAM authorizers (and Cognito for REST)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def jwt_authorizer(claims: dict[str, Any]) -> dict[str, Any]:
    """HTTP API JWT authorizer: `requestContext.authorizer.jwt`."""
    return {"jwt": {"claims": claims, "scopes": None}}


def lambda_authorizer_v2(context: dict[str, Any]) -> dict[str, Any]:
    """HTTP API Lambda authorizer (simple or IAM-policy response): `requestContext.authorizer.lambda`."""
    return {"lambda": context}


def iam_authorizer_v2(user_arn: str) -> dict[str, Any]:
    """HTTP API IAM authorization: `requestContext.authorizer.iam`."""
    return {"iam": {"accessKey": "AKIAIOSFODNN7EXAMPLE", "accountId": "111122223333",
                    "callerId": "AIDACKCEVSQ6C2EXAMPLE", "cognitoIdentity": None, "principalOrgId": None,
                    "userArn": user_arn, "userId": "AIDACKCEVSQ6C2EXAMPLE"}}


def http_api_event(method: str, path: str, route_key: str | None = None, *, authorizer: dict[str, Any] | None,
                   request_id: str | None = None, time_epoch_ms: int | None = None,
                   path_parameters: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) request; `route_key` like "GET /items/{id}", default `$default`."""
    route_key = route_key or "$default"
    context: dict[str, Any] = {
        "accountId": "123456789012", "apiId": "api-id",
        "domainName": "id.execute-api.us-east-1.amazonaws.com", "domainPrefix": "id",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                 "userAgent": "agent"},
        "requestId": request_id or uuid.uuid4().hex[:16] + "=", "routeKey": route_key, "stage": "$default",
        "time": "12/Mar/2020:19:03:58 +0000", "timeEpoch": time_epoch_ms or int(time.time() * 1000),
    }
    if authorizer is not None:
        context["authorizer"] = authorizer
    return {
        "version": "2.0", "routeKey": route_key, "rawPath": path, "rawQueryString": "",
        "cookies": [], "headers": {"content-type": "application/json", "user-agent": "agent"},
        "requestContext": context, "pathParameters": path_parameters or {},
        "body": encoded(body), "isBase64Encoded": False,
    }


def rest_api_event(method: str, path: str, resource: str | None = None, *, authorizer: dict[str, Any] | None = None,
                   user_arn: str | None = None, request_id: str | None = None, time_epoch_ms: int | None = None,
                   path_parameters: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    """A REST API (format 1.0) request. `authorizer` is the Lambda authorizer's context (with `principalId`)
    or a Cognito authorizer's `{"claims": {...}}`; `user_arn` the caller of IAM authorization."""
    resource = resource or path
    identity = {"accessKey": None, "accountId": None, "caller": None, "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "sourceIp": "192.0.2.1", "user": None, "userAgent": "agent",
                "userArn": None}
    if user_arn:
        identity.update(accountId="111122223333", caller="AIDACKCEVSQ6C2EXAMPLE", user="AIDACKCEVSQ6C2EXAMPLE",
                        userArn=user_arn, accessKey="AKIAIOSFODNN7EXAMPLE")
    return {
        "resource": resource, "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json"}, "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "requestContext": {
            "accountId": "123456789012", "apiId": "id",
            "authorizer": authorizer if authorizer is not None else {"claims": None, "scopes": None},
            "domainName": "id.execute-api.us-east-1.amazonaws.com", "domainPrefix": "id",
            "extendedRequestId": "request-id", "httpMethod": method, "identity": identity, "path": f"/prod{path}",
            "protocol": "HTTP/1.1", "requestId": request_id or str(uuid.uuid4()),
            "requestTime": "04/Mar/2020:19:15:17 +0000", "requestTimeEpoch": time_epoch_ms or int(time.time() * 1000),
            "resourceId": "abc123", "resourcePath": resource, "stage": "prod",
        },
        "pathParameters": path_parameters, "stageVariables": None,
        "body": encoded(body), "isBase64Encoded": False,
    }


def encoded(body: Any) -> str | None:
    """A request body as API Gateway passes it: text as it is, anything else as JSON."""
    if body is None or isinstance(body, str):
        return body
    return json.dumps(body)
