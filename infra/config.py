"""The settings of one Meterline deployment: `MeterlineProps` for users who embed the construct,
`MeterlineProps.from_context` for the app (`cdk deploy -c stage=prod -c alarmEmail=...`).

Every default lives here, once. Context values from the command line arrive as strings, those
from cdk.json as JSON values: both are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_logs as logs
from constructs import Node

from meterline.settings import NAMESPACE_RULE, STREAM_BATCH_SIZE, AuthMode, is_namespace, retention_problems

STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Every stage but this one is protected (deletion protection, RETAIN) and must authenticate callers.
DEVELOPMENT_STAGE = "dev"
AUTH_MODES = tuple(mode.value for mode in AuthMode)

# The context keys the app reads (documented in docs/infrastructure.md), mapped to prop names.
CONTEXT_KEYS: dict[str, str] = {
    "stage": "stage",
    "retentionDays": "retention_days",
    "minuteRetentionDays": "minute_retention_days",
    "quarterRetentionDays": "quarter_retention_days",
    "logLevel": "log_level",
    "logRetentionDays": "log_retention_days",
    "alarmEmail": "alarm_email",
    "domainName": "domain_name",
    "certificateArn": "certificate_arn",
    "defaultNamespace": "default_namespace",
    "streamBatchSize": "stream_batch_size",
    "streamBatchingWindowSeconds": "stream_batching_window_seconds",
    "streamRetryAttempts": "stream_retry_attempts",
    "streamMaxRecordAgeSeconds": "stream_max_record_age_seconds",
    "apiThrottleRateLimit": "api_throttle_rate_limit",
    "apiThrottleBurstLimit": "api_throttle_burst_limit",
    "managementThrottleRateLimit": "management_throttle_rate_limit",
    "managementThrottleBurstLimit": "management_throttle_burst_limit",
    "ingestReservedConcurrency": "ingest_reserved_concurrency",
    "processorReservedConcurrency": "processor_reserved_concurrency",
    "queueMaxConcurrency": "queue_max_concurrency",
    "corsAllowOrigins": "cors_allow_origins",
    "auth": "auth",
    "allowUnauthenticated": "allow_unauthenticated",
    "authorizerFunctionArn": "authorizer_function_arn",
    "jwtIssuer": "jwt_issuer",
    "jwtAudience": "jwt_audience",
    "jwtNamespaceClaim": "jwt_namespace_claim",
    "jwtScopeClaim": "jwt_scope_claim",
    "exportSettleSeconds": "export_settle_seconds",
    "exportMaxHoldSeconds": "export_max_hold_seconds",
    "webhookMaxAttempts": "webhook_max_attempts",
    "webhookBackoffBaseSeconds": "webhook_backoff_base_seconds",
    "webhookBackoffMaxSeconds": "webhook_backoff_max_seconds",
}

# Context key of the test-only switch that skips pip for the dependency layer (see infra/bundling.py).
BUNDLE_DEPENDENCIES_CONTEXT = "meterline:bundleDependencies"


@dataclass(frozen=True)
class MeterlineProps:
    """What a deployment may change. Defaults are those of a development stage."""

    # Every stage but "dev" has deletion protection and RETAIN for the data, and must authenticate
    # callers (see `production`).
    stage: str = "dev"
    # How long events (and derived items) live: the events table's TTL, METERLINE_RETENTION_DAYS.
    retention_days: int = 400
    # Lives of minute rows and quarter-hour counters (METERLINE_MINUTE/QUARTER_RETENTION_DAYS); None: the
    # functions' default, 35 days (meterline.settings.FINE_RETENTION_DAYS; as long as events when events
    # are kept 35 days or less). See docs/architecture.md, "Retention".
    minute_retention_days: int | None = None
    quarter_retention_days: int | None = None
    # Powertools / Lambda application log level.
    log_level: str = "INFO"
    # CloudWatch Logs retention of the Lambda and access log groups (a value CloudWatch accepts).
    log_retention_days: int = 30
    # Subscribed to the alarm topic when set (the address must confirm the subscription).
    alarm_email: str | None = None
    # Custom domain for the API: both or neither (the ACM certificate must be in the stack's region).
    domain_name: str | None = None
    certificate_arn: str | None = None
    # The namespace of every request when auth is "none".
    default_namespace: str = "default"
    # Events-table stream -> processor.
    stream_batch_size: int = STREAM_BATCH_SIZE
    stream_batching_window_seconds: int = 5
    # A failing batch is retried (bisected) until its records are this old, then its position goes to
    # the on-failure queue: 20 h, inside the stream's 24 h retention, so the records can still be read
    # from the stream when the queue's message arrives (AWS allows 60 s to 7 days). `stream_retry_attempts`
    # may add a cap on the number of retries; -1 (the default) retries until the age limit.
    stream_max_record_age_seconds: int = 72_000
    stream_retry_attempts: int = -1
    # HTTP API stage throttling (requests per second, and burst); each ingest request carries up to
    # 1,000 events.
    api_throttle_rate_limit: int = 500
    api_throttle_burst_limit: int = 1000
    # Routes that change meters and reports (and request runs) get a lower per-route throttle.
    management_throttle_rate_limit: int = 20
    management_throttle_burst_limit: int = 40
    # Reserved concurrency of the ingest and processor functions (None: they share the account's pool; a
    # reservation both guarantees and caps them, and needs the account's unreserved minimum of 100 left).
    ingest_reserved_concurrency: int | None = None
    processor_reserved_concurrency: int | None = None
    # The most concurrent invocations each SQS source (export requests, webhook deliveries) may drive.
    queue_max_concurrency: int = 5
    # CORS: origins allowed to call the API from a browser; empty turns CORS off.
    cors_allow_origins: tuple[str, ...] = ("*",)
    # Who vouches for callers (meterline.settings.AuthMode): "api-key" (the default: Meterline's own
    # authorizer and `meterline keys`), "jwt" (an HTTP API JWT authorizer: jwtIssuer, jwtAudience; the
    # namespace is the claim at jwtNamespaceClaim), "lambda" (your Lambda authorizer: an authorizer
    # object, or authorizerFunctionArn; its simple-response context carries `namespace`, optionally
    # `scope`), or "none" (every request in defaultNamespace: only stage "dev", or with
    # allowUnauthenticated).
    auth: str = AuthMode.API_KEY.value
    allow_unauthenticated: bool = False
    authorizer: apigwv2.IHttpRouteAuthorizer | None = None
    authorizer_function_arn: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_namespace_claim: str = "namespace"
    jwt_scope_claim: str | None = None
    # Usage exports: a report's schedule fires this long after each window closes. A window is exported
    # once the stream processor is past its end (at the earliest 150 s after it, the lag policy's settle,
    # so the default fires once); one it is not past after `export_max_hold_seconds` more is exported
    # anyway, marked provisional.
    export_settle_seconds: int = 180
    export_max_hold_seconds: int = 3600
    # A failed webhook is tried again after about base * 2^(n-1) seconds (jittered), at most `max` (SQS
    # delays a message at most 900 s), `webhook_max_attempts` tries in all; then it goes to the delivery
    # dead-letter queue.
    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: int = 30
    webhook_backoff_max_seconds: int = 900
    # Alarm thresholds.
    iterator_age_alarm_seconds: int = 300
    api_5xx_alarm_percent: float = 1.0

    def __post_init__(self) -> None:
        errors = list(self._errors())
        if errors:
            raise ValueError("invalid Meterline settings: " + "; ".join(errors))

    def _errors(self) -> list[str]:
        errors = []
        if not STAGE_PATTERN.match(self.stage):
            errors.append(f"stage {self.stage!r} must match {STAGE_PATTERN.pattern}")
        errors += retention_problems(self.retention_days, self.minute_retention_days, self.quarter_retention_days,
                                     {"days": "retentionDays", "minute": "minuteRetentionDays",
                                      "quarter": "quarterRetentionDays"})
        if self.log_level not in LOG_LEVELS:
            errors.append(f"logLevel must be one of {', '.join(LOG_LEVELS)}")
        if self.log_retention_days not in _RETENTION_BY_DAYS:
            errors.append(f"logRetentionDays must be one of {sorted(_RETENTION_BY_DAYS)}")
        if self.alarm_email is not None and not EMAIL_PATTERN.match(self.alarm_email):
            errors.append("alarmEmail is not an email address")
        if (self.domain_name is None) != (self.certificate_arn is None):
            errors.append("domainName and certificateArn go together")
        if self.certificate_arn is not None and not self.certificate_arn.startswith("arn:"):
            errors.append("certificateArn must be an ACM certificate ARN")
        if not is_namespace(self.default_namespace):
            errors.append(f"defaultNamespace must match {NAMESPACE_RULE}")
        if not 1 <= self.stream_batch_size <= 10_000:
            errors.append("streamBatchSize must be between 1 and 10000")
        if not 0 <= self.stream_batching_window_seconds <= 300:
            errors.append("streamBatchingWindowSeconds must be between 0 and 300")
        if not 1 <= self.management_throttle_rate_limit <= self.api_throttle_rate_limit:
            errors.append("managementThrottleRateLimit must be between 1 and apiThrottleRateLimit")
        if not 1 <= self.management_throttle_burst_limit <= self.api_throttle_burst_limit:
            errors.append("managementThrottleBurstLimit must be between 1 and apiThrottleBurstLimit")
        for key, value in (("ingestReservedConcurrency", self.ingest_reserved_concurrency),
                           ("processorReservedConcurrency", self.processor_reserved_concurrency)):
            if value is not None and not 1 <= value <= 1000:
                errors.append(f"{key} must be between 1 and 1000")
        if not 2 <= self.queue_max_concurrency <= 1000:
            errors.append("queueMaxConcurrency must be between 2 and 1000 (SQS event sources' range)")
        if not 60 <= self.stream_max_record_age_seconds <= 604_800:
            errors.append("streamMaxRecordAgeSeconds must be between 60 and 604800 (7 days), as AWS allows")
        if not -1 <= self.stream_retry_attempts <= 10_000:
            errors.append("streamRetryAttempts must be -1 (retry until streamMaxRecordAgeSeconds) or between 0 "
                          "and 10000")
        if self.api_throttle_rate_limit < 1 or self.api_throttle_burst_limit < 1:
            errors.append("apiThrottleRateLimit and apiThrottleBurstLimit must be positive")
        errors += self._auth_errors()
        if self.authorizer is not None and self.authorizer_function_arn is not None:
            errors.append("give authorizer or authorizerFunctionArn, not both")
        if self.authorizer_function_arn is not None and not self.authorizer_function_arn.startswith("arn:"):
            errors.append("authorizerFunctionArn must be a Lambda function ARN")
        if not 1 <= self.export_settle_seconds <= 3600:
            errors.append("exportSettleSeconds must be between 1 and 3600")
        if not 60 <= self.export_max_hold_seconds <= 86_400:
            errors.append("exportMaxHoldSeconds must be between 60 and 86400")
        if not 1 <= self.webhook_max_attempts <= 100:
            errors.append("webhookMaxAttempts must be between 1 and 100")
        if not 1 <= self.webhook_backoff_base_seconds <= self.webhook_backoff_max_seconds <= 900:
            errors.append("webhookBackoffBaseSeconds and webhookBackoffMaxSeconds must satisfy "
                          "1 <= base <= max <= 900 (SQS's longest message delay)")
        return errors

    def _auth_errors(self) -> list[str]:
        if self.auth not in AUTH_MODES:
            return [f"auth must be one of {', '.join(AUTH_MODES)}"]
        mode, errors = AuthMode(self.auth), []
        has_lambda = self.authorizer is not None or self.authorizer_function_arn is not None
        if mode is AuthMode.LAMBDA and not has_lambda:
            errors.append("auth=lambda needs authorizerFunctionArn (or an authorizer object)")
        if mode is not AuthMode.LAMBDA and has_lambda:
            errors.append("an authorizer (authorizerFunctionArn) is used with auth=lambda only")
        if mode is AuthMode.JWT and not (self.jwt_issuer and self.jwt_audience):
            errors.append("auth=jwt needs jwtIssuer and jwtAudience")
        if mode is not AuthMode.JWT and (self.jwt_issuer or self.jwt_audience):
            errors.append("jwtIssuer and jwtAudience are used with auth=jwt only")
        if mode is AuthMode.NONE and self.stage != DEVELOPMENT_STAGE and not self.allow_unauthenticated:
            errors.append(f"stage {self.stage!r} would serve every request without authentication (auth=none): "
                          "use auth=api-key (the default), jwt or lambda, or pass -c allowUnauthenticated=true")
        return errors

    @property
    def production(self) -> bool:
        """Every stage but "dev" is protected: deletion protection on, and RETAIN on removal."""
        return self.stage != DEVELOPMENT_STAGE

    @property
    def auth_mode(self) -> AuthMode:
        return AuthMode(self.auth)

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION_BY_DAYS[self.log_retention_days]

    @property
    def stream_batching_window(self) -> Duration:
        return Duration.seconds(self.stream_batching_window_seconds)


    @classmethod
    def from_context(cls, node: Node) -> MeterlineProps:
        """Read the props from CDK context (cdk.json, `-c key=value`); unset keys keep the defaults."""
        values: dict[str, Any] = {}
        for key, prop in CONTEXT_KEYS.items():
            raw = node.try_get_context(key)
            if raw is None or raw == "":
                continue
            values[prop] = _coerce(prop, raw)
        return cls(**values)


def _coerce(prop: str, raw: Any) -> Any:
    declared = MeterlineProps.__dataclass_fields__[prop]
    default = declared.default
    if prop == "cors_allow_origins":
        if isinstance(raw, str):
            return tuple(origin.strip() for origin in raw.split(",") if origin.strip())
        return tuple(str(origin) for origin in raw)
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() not in ("true", "false"):
            raise ValueError(f"context value {raw!r} for {prop} must be true or false")
        return str(raw).lower() == "true"
    if isinstance(default, int) or str(declared.type) == "int | None":
        try:
            return int(str(raw))
        except ValueError as error:
            raise ValueError(f"context value {raw!r} for {prop} is not an integer") from error
    if prop == "log_level":
        return str(raw).upper()
    return str(raw)


def bool_context(node: Node, key: str, default: bool) -> bool:
    raw = node.try_get_context(key)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    return str(raw).lower() in ("1", "true", "yes")


_RETENTION_BY_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
