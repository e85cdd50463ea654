"""Runtime settings: every environment variable the Lambda code reads is read and validated here (the
Lambda's environment on AWS, the local stack's locally). Most are read once per process."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from meterline.domain.processing_lag import LagPolicy

NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The tables' own partitions that no namespace may shadow (storage keys begin with the namespace).
RESERVED_NAMESPACES = frozenset({"work", "manifest", "late", "compaction", "backfill", "processing"})
NAMESPACE_RULE = f"{NAMESPACE_PATTERN.pattern}, and not {', '.join(sorted(RESERVED_NAMESPACES))}"


def is_namespace(name: object) -> bool:
    """A name a namespace may have: lower-case letters, digits, `_` and `-`, and not a reserved word."""
    return isinstance(name, str) and bool(NAMESPACE_PATTERN.match(name)) and name not in RESERVED_NAMESPACES


class AuthMode(StrEnum):
    """Who vouches for an HTTP caller: nobody (`none`: every request acts in the default namespace),
    Meterline's API-key authorizer, a JWT authorizer (the namespace is a claim), or another Lambda
    authorizer (its context carries `namespace` and optionally `scope`)."""

    NONE = "none"
    API_KEY = "api-key"
    JWT = "jwt"
    LAMBDA = "lambda"


@dataclass(frozen=True)
class Settings:
    default_namespace: str
    retention_days: int
    meters_file: str | None
    # Fine resolutions may be kept for less time than events, hour and day counters (see
    # meterline.storage.usage_store.Retention).
    minute_retention_days: int | None = None
    quarter_retention_days: int | None = None
    auth: AuthMode = AuthMode.NONE
    # With JWT auth: the dotted path of the claim naming the namespace, and of an optional scope claim.
    jwt_namespace_claim: str = "namespace"
    jwt_scope_claim: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        namespace = os.environ.get("METERLINE_DEFAULT_NAMESPACE", "default")
        if not is_namespace(namespace):
            raise RuntimeError(f"METERLINE_DEFAULT_NAMESPACE={namespace!r} must match {NAMESPACE_RULE}")
        retention = _count("METERLINE_RETENTION_DAYS", 400)
        minute = _count("METERLINE_MINUTE_RETENTION_DAYS", None)
        quarter = _count("METERLINE_QUARTER_RETENTION_DAYS", None)
        minute, quarter = fine_retention_defaults(retention, minute, quarter)
        problems = retention_problems(retention, minute, quarter, RETENTION_ENV)
        if problems:
            raise RuntimeError("; ".join(problems))
        raw_auth = os.environ.get("METERLINE_AUTH", "none").strip().lower()
        try:
            auth = AuthMode(raw_auth)
        except ValueError:
            raise RuntimeError(f"METERLINE_AUTH={raw_auth!r} must be one of "
                               f"{', '.join(mode.value for mode in AuthMode)}") from None
        return cls(
            auth=auth,
            jwt_namespace_claim=os.environ.get("METERLINE_JWT_NAMESPACE_CLAIM") or "namespace",
            jwt_scope_claim=os.environ.get("METERLINE_JWT_SCOPE_CLAIM") or None,
            default_namespace=namespace,
            retention_days=retention,
            meters_file=os.environ.get("METERLINE_METERS_FILE") or None,
            minute_retention_days=minute,
            quarter_retention_days=quarter,
        )


# Stream batches: on AWS a Lambda batch of up to 1,000 records (gathered for up to 5 s) keeps the cost
# per event low; the local poller hands over 100 at a time so that a small local workload is counted
# within a second or two.
STREAM_BATCH_SIZE = 1000
LOCAL_STREAM_BATCH_SIZE = 100

RETENTION_ENV = {"days": "METERLINE_RETENTION_DAYS", "minute": "METERLINE_MINUTE_RETENTION_DAYS",
                 "quarter": "METERLINE_QUARTER_RETENTION_DAYS"}
MAX_RETENTION_DAYS = 3650
# Minute rows and quarter-hour slots are kept this long unless configured otherwise: they serve MINUTE
# windows and edges off the hour, which are asked of recent data; hours and days serve the rest for the
# whole retention (docs/decisions.md, "Fine resolutions kept 35 days by default").
FINE_RETENTION_DAYS = 35


def fine_retention_defaults(days: int, minute_days: int | None, quarter_days: int | None
                            ) -> tuple[int | None, int | None]:
    """The minute and quarter retentions with their defaults filled in: FINE_RETENTION_DAYS when events
    are kept longer, and never longer than a configured quarter retention. None: as long as events (also
    what a retention equal to the events' means: rows and slots then outlive the events they count)."""
    if days > FINE_RETENTION_DAYS:
        if minute_days is None:
            minute_days = min(FINE_RETENTION_DAYS, quarter_days if quarter_days is not None else days)
        if quarter_days is None:
            quarter_days = max(FINE_RETENTION_DAYS, minute_days)
    return (None if minute_days == days else minute_days), (None if quarter_days == days else quarter_days)


def retention_problems(days: int, minute_days: int | None, quarter_days: int | None,
                       names: Mapping[str, str]) -> list[str]:
    """What is wrong with a set of retentions (see meterline.storage.usage_store.Retention), named as the
    caller names them (`names` maps days, minute and quarter to environment variables or CDK context
    keys): the same rules for the Lambda environment, the local stack and `cdk synth`."""
    days_name, minute_name, quarter_name = names["days"], names["minute"], names["quarter"]
    problems = []
    if not 1 <= days <= MAX_RETENTION_DAYS:
        problems.append(f"{days_name} must be between 1 and {MAX_RETENTION_DAYS}")
    if minute_days is not None and not 2 <= minute_days <= days:
        problems.append(f"{minute_name} must be at least 2 (late events need a day) and at most {days_name}")
    if quarter_days is not None and not 1 <= quarter_days <= days:
        problems.append(f"{quarter_name} must be between 1 and {days_name}")
    if minute_days is not None and quarter_days is not None and minute_days > quarter_days:
        problems.append(f"{minute_name} must not exceed {quarter_name}")
    return problems


@cache
def settings() -> Settings:
    return Settings.from_env()


@dataclass(frozen=True)
class CompactionTiming:
    """When the compactor folds a quarter: `grace` after it ends. A stream batch decides on-time or
    late `write_margin` before that, so its writes land before the compactor reads (the margin must
    exceed the processor's timeout)."""

    grace_ms: int
    write_margin_ms: int

    @classmethod
    def from_env(cls) -> CompactionTiming:
        grace = float(os.environ.get("METERLINE_COMPACTION_GRACE_SECONDS", "180"))
        margin = float(os.environ.get("METERLINE_WRITE_MARGIN_SECONDS", "90"))
        if not 0 < margin < grace:
            raise RuntimeError("need 0 < METERLINE_WRITE_MARGIN_SECONDS < METERLINE_COMPACTION_GRACE_SECONDS")
        return cls(grace_ms=int(grace * 1000), write_margin_ms=int(margin * 1000))


@cache
def compaction_timing() -> CompactionTiming:
    return CompactionTiming.from_env()


def _positive(name: str, default: float) -> float:
    value: float = number_setting(name, float, default, "greater than 0", lambda v: v > 0)
    return value


def _count(name: str, default: int | None) -> Any:
    """A whole number of at least 1 (days, reads, rows, meters, ...)."""
    return number_setting(name, int, default, "at least 1", lambda v: v >= 1)


@dataclass(frozen=True)
class QueryLimits:
    """What one HTTP request may cost, so that bad input is a 400 and never a timeout: a usage query at
    most `read_budget` DynamoDB Queries and `max_rows` rows; an events listing at most
    `listing_budget` index rows scanned. (Exports read one closed window and are not limited.)"""

    read_budget: int = 20_000
    max_rows: int = 10_000
    listing_budget: int = 200_000

    @classmethod
    def from_env(cls) -> QueryLimits:
        return cls(read_budget=_count("METERLINE_QUERY_READ_BUDGET", cls.read_budget),
                   max_rows=_count("METERLINE_QUERY_MAX_ROWS", cls.max_rows),
                   listing_budget=_count("METERLINE_LISTING_BUDGET", cls.listing_budget))


@dataclass(frozen=True)
class Quotas:
    """How much one namespace may hold or do: meters, reports, and manual export runs per hour."""

    meters: int = 200
    reports: int = 100
    manual_runs_per_hour: int = 60

    @classmethod
    def from_env(cls) -> Quotas:
        return cls(meters=_count("METERLINE_MAX_METERS", cls.meters),
                   reports=_count("METERLINE_MAX_REPORTS", cls.reports),
                   manual_runs_per_hour=_count("METERLINE_MAX_MANUAL_RUNS_PER_HOUR", cls.manual_runs_per_hour))


def entitlement_snapshot_grace_ms() -> int:
    """How old a period reset must be before a value keeps the burn-down state there as a snapshot.
    Usage that arrives later than this for a time before the snapshot no longer changes the balances
    after it (OpenMeter keeps one day too)."""
    hours: int = _count("METERLINE_ENTITLEMENT_SNAPSHOT_GRACE_HOURS", 24)
    return hours * 3_600_000


@cache
def quotas() -> Quotas:
    return Quotas.from_env()


@cache
def query_limits() -> QueryLimits:
    return QueryLimits.from_env()


@dataclass(frozen=True)
class ExportSettings:
    """Usage exports. Schedules fire `settle` after each window closes; a run is exported once the stream
    processor is past the window's end (see domain/processing_lag.py), or after `max_hold_ms` as a
    provisional run; a scheduled run catches up at most `catch_up_windows` missed windows; run history is
    kept `run_retention_days`; a manual run waiting for its meter's backfill is retried every
    `backfill_wait_seconds`."""

    settle_ms: int
    catch_up_windows: int
    run_retention_days: int
    # A manual run whose meter is still backfilling is asked for again this much later.
    backfill_wait_seconds: int = 30
    max_hold_ms: int = 3_600_000

    @classmethod
    def from_env(cls) -> ExportSettings:
        return cls(
            settle_ms=int(_positive("METERLINE_EXPORT_SETTLE_SECONDS", 60) * 1000),
            catch_up_windows=int(_positive("METERLINE_EXPORT_CATCH_UP_WINDOWS", 24)),
            run_retention_days=int(_positive("METERLINE_RUN_RETENTION_DAYS", 90)),
            backfill_wait_seconds=int(_positive("METERLINE_EXPORT_BACKFILL_WAIT_SECONDS", 30)),
            max_hold_ms=int(_positive("METERLINE_EXPORT_MAX_HOLD_SECONDS", 3600) * 1000),
        )


@cache
def export_settings() -> ExportSettings:
    return ExportSettings.from_env()


@cache
def lag_policy() -> LagPolicy:
    """When the stream processor reports itself behind, and how long exporters look back for it."""
    return LagPolicy(report_after_ms=int(_positive("METERLINE_PROCESSING_LAG_REPORT_SECONDS", 30) * 1000),
                     lookback_ms=int(_positive("METERLINE_PROCESSING_LAG_LOOKBACK_SECONDS", 120) * 1000))


def required_env(name: str, what: str) -> str:
    """A variable the stack must set (a table name, a queue URL, a key id); read on each use."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"environment variable {name} ({what}) is not set")
    return value


def number_setting(name: str, kind: Callable[[str], Any], default: Any, rule: str,
                   valid: Callable[[Any], bool]) -> Any:
    """An optional numeric variable: `default` when unset or blank, else `kind(raw)` checked by `valid`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise RuntimeError(f"{name}={raw!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if not (math.isfinite(value) and valid(value)):
        raise RuntimeError(f"{name}={raw!r} must be {rule}")
    return value


DEFAULT_METER_CACHE_SECONDS = 30.0


def meter_cache_seconds() -> float:
    """How long a process reuses a namespace's meters (METERLINE_METER_CACHE_SECONDS)."""
    return float(os.environ.get("METERLINE_METER_CACHE_SECONDS", DEFAULT_METER_CACHE_SECONDS))


ALLOW_LOOPBACK_ENV = "METERLINE_WEBHOOK_ALLOW_LOOPBACK"


def webhook_allow_loopback() -> bool:
    """Whether usage webhooks may go to loopback addresses (local development only)."""
    raw = os.environ.get(ALLOW_LOOPBACK_ENV, "false").strip().lower()
    if raw not in ("true", "false"):
        raise RuntimeError(f"{ALLOW_LOOPBACK_ENV}={raw!r} must be true or false")
    return raw == "true"

