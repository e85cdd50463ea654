"""The HTTP API: one Lambda per entry of functions.routes.HTTP_FUNCTIONS, routed from the same
catalog the local gateway routes from, on a `$default` stage with throttling and JSON access logs.

Every route has the deployment's authorizer (props.auth): Meterline's API-key authorizer by default,
a JWT authorizer, or your own Lambda authorizer; the handlers read the caller from the authorizer's
context and check its scope (meterline.http.auth). Only with auth=none (the dev stage, or an explicit
allowUnauthenticated) do routes go without one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import jsii
from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from functions.routes import API, AUTHORIZER, HTTP_FUNCTIONS, INGEST, HttpFunction
from infra.config import MeterlineProps
from infra.lambdas import MeterlineFunction, SharedLayers, removal_policy
from meterline.aws.portal_secret import SECRET_ENV as PORTAL_SECRET_ENV
from meterline.settings import AuthMode
from meterline.storage.tables import TableSpec

# API Gateway keeps an authorizer's answer this long per Authorization header: a revoked key stops
# working within it.
AUTHORIZER_CACHE = Duration.seconds(60)

# One JSON object per request; no headers, so no credentials, reach the logs.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "method": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
    "userAgent": "$context.identity.userAgent",
}

CORS_ALLOW_HEADERS = ["authorization", "content-type", "accept"]
CORS_ALLOW_METHODS = [
    apigwv2.CorsHttpMethod.GET,
    apigwv2.CorsHttpMethod.POST,
    apigwv2.CorsHttpMethod.PUT,
    apigwv2.CorsHttpMethod.DELETE,
    apigwv2.CorsHttpMethod.OPTIONS,
]


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")))


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: MeterlineProps,
        layers: SharedLayers,
        tables: Mapping[TableSpec, dynamodb.ITable],
        catalog: tuple[HttpFunction, ...] = HTTP_FUNCTIONS,
    ) -> None:
        super().__init__(scope, construct_id)
        self.functions: dict[str, MeterlineFunction] = {
            spec.name: MeterlineFunction(
                self, function_construct_id(spec.name),
                name=spec.name, description=spec.description, props=props, layers=layers, tables=tables,
                reserved_concurrency=props.ingest_reserved_concurrency if spec.name == INGEST.name else None,
            )
            for spec in catalog
        }

        # Portal tokens (HS256 JWTs) are signed with this; the api function issues and checks them.
        self.portal_secret = secretsmanager.Secret(
            self, "PortalTokenSecret",
            description="Meterline: signs portal tokens (HS256); rotating it invalidates every outstanding token",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64,
                                                                          exclude_punctuation=True),
            removal_policy=removal_policy(props),
        )
        api_function = self.functions[API.name]
        self.portal_secret.grant_read(api_function.role)
        api_function.function.add_environment(PORTAL_SECRET_ENV, self.portal_secret.secret_arn)

        self.http_api = apigwv2.HttpApi(
            self, "HttpApi",
            api_name=f"{Stack.of(self).stack_name}-api",
            description=f"Meterline ({props.stage}): OpenMeter v1 API",
            create_default_stage=False,
            cors_preflight=_cors(props),
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=props.log_retention, removal_policy=removal_policy(props)
        )
        self.domain_name = _domain(self, props)
        self.stage = apigwv2.HttpStage(
            self, "DefaultStage",
            http_api=self.http_api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=props.api_throttle_rate_limit, burst_limit=props.api_throttle_burst_limit
            ),
            access_log_settings=_AccessLogSettings(self.access_logs),
            domain_mapping=apigwv2.DomainMappingOptions(domain_name=self.domain_name) if self.domain_name else None,
        )

        self.authorizer_function: MeterlineFunction | None = None
        if props.auth_mode is AuthMode.API_KEY:
            self.authorizer_function = MeterlineFunction(
                self, "ApiKeyAuthorizer", name=AUTHORIZER.name, description=AUTHORIZER.description, props=props,
                layers=layers, tables=tables,
            )
        self.authorizer = _authorizer(self, props, self.authorizer_function)
        for spec in catalog:
            # One invoke permission per function for the whole API, not one per route: the OpenMeter
            # API has dozens of routes and a function's resource policy is capped at 20 KB.
            integration = integrations.HttpLambdaIntegration(
                f"{function_construct_id(spec.name)}Integration", self.functions[spec.name].function,
                scope_permission_to_route=False,
            )
            for method, path in spec.routes:
                self.http_api.add_routes(
                    path=path,
                    methods=[apigwv2.HttpMethod[method]],
                    integration=integration,
                    authorizer=self.authorizer,
                )

        _throttle_management_routes(self.stage, catalog, props)

    @property
    def url(self) -> str:
        """The API's base URL (the execute-api endpoint of the `$default` stage)."""
        url = self.stage.url
        assert url is not None
        return url


def management_routes(catalog: tuple[HttpFunction, ...]) -> list[str]:
    """Route keys that change meters and reports or request runs: every write but ingestion and queries."""
    return [f"{method} {path}" for spec in catalog for method, path in spec.routes
            if method != "GET" and (method, path) != INGEST.routes[0] and not path.endswith("/query")]


def _throttle_management_routes(stage: apigwv2.HttpStage, catalog: tuple[HttpFunction, ...],
                                props: MeterlineProps) -> None:
    # The L2 stage sets only the default route's throttle; per-route settings go on the CfnStage.
    cfn_stage = stage.node.default_child
    assert isinstance(cfn_stage, apigwv2.CfnStage)
    cfn_stage.add_property_override("RouteSettings", {
        key: {"ThrottlingRateLimit": props.management_throttle_rate_limit,
              "ThrottlingBurstLimit": props.management_throttle_burst_limit}
        for key in management_routes(catalog)
    })


def function_construct_id(name: str) -> str:
    """The construct id of the catalog function `name` under the Api construct (`ingest` -> `Ingest`)."""
    return "".join(part.capitalize() for part in name.split("_"))


def _cors(props: MeterlineProps) -> apigwv2.CorsPreflightOptions | None:
    if not props.cors_allow_origins:
        return None
    return apigwv2.CorsPreflightOptions(
        allow_origins=list(props.cors_allow_origins),
        allow_methods=CORS_ALLOW_METHODS,
        allow_headers=CORS_ALLOW_HEADERS,
        allow_credentials=False,
        max_age=Duration.hours(1),
    )


def _domain(scope: Construct, props: MeterlineProps) -> apigwv2.DomainName | None:
    if props.domain_name is None or props.certificate_arn is None:
        return None
    return apigwv2.DomainName(
        scope, "Domain",
        domain_name=props.domain_name,
        certificate=acm.Certificate.from_certificate_arn(scope, "Certificate", props.certificate_arn),
        security_policy=apigwv2.SecurityPolicy.TLS_1_2,
    )


def _authorizer(scope: Construct, props: MeterlineProps, api_keys: MeterlineFunction | None
                ) -> apigwv2.IHttpRouteAuthorizer | None:
    mode = props.auth_mode
    if mode is AuthMode.NONE:
        return None
    if mode is AuthMode.JWT:
        assert props.jwt_issuer is not None and props.jwt_audience is not None
        return authorizers.HttpJwtAuthorizer("JwtAuthorizer", props.jwt_issuer,
                                             jwt_audience=[props.jwt_audience])
    if mode is AuthMode.LAMBDA and props.authorizer is not None:
        return props.authorizer
    if mode is AuthMode.API_KEY:
        assert api_keys is not None
        function: lambda_.IFunction = api_keys.function
    else:
        assert props.authorizer_function_arn is not None
        function = lambda_.Function.from_function_attributes(
            scope, "AuthorizerFunction", function_arn=props.authorizer_function_arn, same_environment=True
        )
    return authorizers.HttpLambdaAuthorizer(
        "Authorizer", function,
        response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
        identity_source=["$request.header.Authorization"],
        results_cache_ttl=AUTHORIZER_CACHE,
    )
