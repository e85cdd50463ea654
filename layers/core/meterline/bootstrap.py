"""The composition root: every store, client wrapper and service a handler uses is built here, once per
process, from the settings. Handlers call these factories and nothing else builds collaborators.

Tests replace a collaborator by calling `reset()` (which forgets every built object and cached
setting) after changing the environment, or by monkeypatching a factory. Imports are inside the
factories, so a handler's cold import pays only for what that function builds.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meterline.aws.portal_secret import PortalSecret
    from meterline.services.access_log_metering import AccessLogMeterer
    from meterline.services.backfill import BackfillWorker
    from meterline.services.compaction import Compactor
    from meterline.services.entitlement_gate import EntitlementGate
    from meterline.services.entitlements import EntitlementsContext
    from meterline.services.exports import Exporter, WebhookSender
    from meterline.services.reports import ReportsContext
    from meterline.storage.events_store import EventsStore
    from meterline.storage.features_store import FeaturesStore
    from meterline.storage.keys_store import KeysStore
    from meterline.storage.meters_store import MetersStore
    from meterline.storage.processing_store import ProcessingLagStore
    from meterline.storage.reports_store import ReportsStore
    from meterline.storage.subjects_store import SubjectsStore
    from meterline.storage.usage_store import UsageStore


@cache
def events_store() -> EventsStore:
    from meterline.settings import settings
    from meterline.storage.events_store import EventsStore

    return EventsStore(retention_days=settings().retention_days)


@cache
def usage_store() -> UsageStore:
    from meterline.storage.usage_store import UsageStore

    return UsageStore.configured()


@cache
def processing_lag_store() -> ProcessingLagStore:
    from meterline.storage.processing_store import ProcessingLagStore

    return ProcessingLagStore()


@cache
def meters_store() -> MetersStore:
    from meterline.storage.meters_store import MetersStore

    return MetersStore()


@cache
def features_store() -> FeaturesStore:
    from meterline.storage.features_store import FeaturesStore

    return FeaturesStore()


@cache
def subjects_store() -> SubjectsStore:
    from meterline.storage.subjects_store import SubjectsStore

    return SubjectsStore()


@cache
def entitlements_context() -> EntitlementsContext:
    from meterline.services.entitlements import EntitlementsContext
    from meterline.settings import entitlement_snapshot_grace_ms, query_limits
    from meterline.storage.entitlements_store import EntitlementsStore

    return EntitlementsContext(EntitlementsStore(), features_store(), meters_store(), subjects_store(), usage_store(),
                               query_limits(), entitlement_snapshot_grace_ms())


@cache
def entitlement_gate() -> EntitlementGate:
    from dataclasses import replace

    from meterline.domain.entitlement_gate import ENTITLEMENT_GATE_ENV, EntitlementGateConfig
    from meterline.services.entitlement_gate import EntitlementGate
    from meterline.settings import required_env

    config = EntitlementGateConfig.model_validate_json(required_env(ENTITLEMENT_GATE_ENV,
                                                                    "the entitlement authorizer's rules"))
    # The authorizer's role is read-only, so its values keep no balance snapshots.
    return EntitlementGate(replace(entitlements_context(), keep_snapshots=False), config)


@cache
def access_log_meterer() -> AccessLogMeterer:
    from meterline.domain.access_logs import ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig
    from meterline.services.access_log_metering import AccessLogMeterer
    from meterline.settings import required_env

    config = AccessLogMeteringConfig.model_validate_json(required_env(ACCESS_LOG_METERING_ENV,
                                                                      "what a stage's access logs are metered as"))
    return AccessLogMeterer(events_store(), config)


@cache
def keys_store() -> KeysStore:
    from meterline.storage.keys_store import KeysStore

    return KeysStore()


@cache
def portal_secret() -> PortalSecret:
    from meterline.aws.portal_secret import PortalSecret

    return PortalSecret()


@cache
def reports_store() -> ReportsStore:
    from meterline.settings import export_settings
    from meterline.storage.reports_store import ReportsStore

    return ReportsStore(run_retention_days=export_settings().run_retention_days)


@cache
def compactor() -> Compactor:
    from meterline.services.compaction import Compactor
    from meterline.services.meter_source import meter_catalog
    from meterline.settings import compaction_timing
    from meterline.storage.zone_requests_store import ZoneRequests

    return Compactor(usage_store(), meter_catalog, compaction_timing(), ZoneRequests().requested)


@cache
def backfill_worker() -> BackfillWorker:
    from meterline.services.backfill import BackfillWorker
    from meterline.services.meter_source import ttl_seconds

    # Wait until every stream processor has reloaded its meters (cache TTL) before reading events.
    settle_ms = int((ttl_seconds() + 5) * 1000)
    return BackfillWorker(events_store(), usage_store(), meters_store(), settle_ms)


@cache
def reports_context() -> ReportsContext:
    from meterline.services.reports import ReportsContext

    return ReportsContext(reports=reports_store(), meters=meters_store())


@cache
def exporter() -> Exporter:
    from meterline.aws.queues import ExportQueues
    from meterline.services.exports import Exporter
    from meterline.settings import export_settings, lag_policy

    return Exporter(reports=reports_store(), meters=meters_store(), usage=usage_store(), queues=ExportQueues(),
                    settings=export_settings(), lag=processing_lag_store(), lag_policy=lag_policy())


@cache
def webhook_sender() -> WebhookSender:
    from meterline.aws.queues import ExportQueues
    from meterline.services.exports import WebhookSender
    from meterline.webhooks import EndpointPolicy, RetryPolicy

    return WebhookSender(reports=reports_store(), queues=ExportQueues(), retry=RetryPolicy.from_env(),
                         endpoint_policy=EndpointPolicy.from_env())


FACTORIES = (events_store, usage_store, processing_lag_store, meters_store, features_store, subjects_store,
             entitlements_context, keys_store, portal_secret, reports_store, compactor, backfill_worker,
             reports_context, exporter,
             webhook_sender, entitlement_gate, access_log_meterer)


def reset() -> None:
    """Forget every object built here and every cached setting (tests, after changing the environment)."""
    from meterline.settings import compaction_timing, export_settings, lag_policy, query_limits, quotas, settings

    for factory in (*FACTORIES, settings, compaction_timing, export_settings, lag_policy, query_limits, quotas):
        factory.cache_clear()
