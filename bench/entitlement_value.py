"""Cost of an entitlement value check, the call gateways make on every request. Every figure is one
`<name> <value>` line.

Setup: the storage benchmark's workload (bench/storage_cost.py: 100,000 Zipf events ending at
2024-05-15T00:00Z, processed by the real processor and folded by the real compactor), so the busiest
subject, `customer-1`, has the largest slots to read. The check is at 2024-05-15T00:20Z, mid-month.

- Entitlement A: monthly (anchor 2024-05-01), `issueAfterReset` 10M plus two grants (one a DAY
  recurrence effective 2024-05-10), feature filtered to one model of `tokens_total`.
- Entitlement B: the same three grants but measured from 2022-05-01: 24 past monthly periods.

Figures (read units from the DynamoDB cost model, tests/fakes.py CostModelDynamoDB, which bills what the
real code asks for):
- `entitlement_value_rru`: one value check of A by feature key, as gateways ask (target <= 20);
- `entitlement_value_rru_first_after_24_periods`: B's first check, which walks its 24 periods and keeps
  a snapshot at the latest settled period start;
- `entitlement_value_rru_after_24_periods`: B's next check, from that snapshot (target <= 20, and not
  more than A's);
- `entitlement_value_cpu_ms` (target <= 5), `_min`, `_max`: CPU per check of A through the real Lambda
  handler (routing, parsing, the engine, the usage query), medians of 5 rounds of 200 checks; DynamoDB
  calls go to the in-memory cost model, not over HTTP (as in the other CPU benchmarks).
Each value is checked against a recount of the generated events.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CATALOG_TABLE", "bench-catalog")
os.environ.setdefault("METERLINE_AUTH", "none")

from bench import storage_cost as sc  # noqa: E402
from bench.workload import NAMESPACE, example_catalog, generate  # noqa: E402
from functions.entitlements import handler as entitlements_handler  # noqa: E402
from meterline.domain.entitlements import EntitlementInput, GrantInput, new_grant  # noqa: E402
from meterline.domain.features import Feature  # noqa: E402
from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms  # noqa: E402
from meterline.services import entitlements  # noqa: E402
from meterline.services.entitlements import EntitlementsContext, ValueQuery  # noqa: E402
from meterline.services.features import create_feature  # noqa: E402
from meterline.settings import QueryLimits  # noqa: E402
from meterline.storage.entitlements_store import EntitlementsStore  # noqa: E402
from meterline.storage.features_store import FeaturesStore  # noqa: E402
from meterline.storage.meters_store import MetersStore  # noqa: E402
from meterline.storage.subjects_store import SubjectsStore  # noqa: E402
from meterline_local.http_gateway import build_v2_event  # noqa: E402
from tests.fakes import CostModelDynamoDB  # noqa: E402

CATALOG_TABLE = os.environ["CATALOG_TABLE"]
SUBJECT = sc.TOP_SUBJECT
MODEL = "gpt-4o"
ROUNDS, CHECKS = 5, 200
GRACE_MS = 24 * 3_600_000


def ms(text: str) -> int:
    return to_epoch_ms(parse_rfc3339(text))


PERIOD_START = ms("2024-05-01T00:00:00Z")
OLD_START = ms("2022-05-01T00:00:00Z")


def new_client() -> CostModelDynamoDB:
    def category(table: str, pk: str) -> str:
        return "catalog" if table == CATALOG_TABLE else sc.category(table, pk)

    return CostModelDynamoDB({sc.EVENTS_TABLE: ("pk", None), sc.USAGE_TABLE: ("pk", "sk"),
                              CATALOG_TABLE: ("pk", "sk")}, category, stream_table=sc.EVENTS_TABLE)


def context(client: CostModelDynamoDB) -> EntitlementsContext:
    return EntitlementsContext(EntitlementsStore(client, CATALOG_TABLE), FeaturesStore(client, CATALOG_TABLE),
                               MetersStore(client, CATALOG_TABLE), SubjectsStore(client, CATALOG_TABLE),
                               sc.usage_store(client), QueryLimits(), GRACE_MS)


def grants(effective_ms: int) -> list[GrantInput]:
    return [GrantInput.model_validate(body) for body in (
        {"amount": 5_000_000, "priority": 2, "effectiveAt": format_ms(effective_ms),
         "expiration": {"duration": "YEAR", "count": 5}, "maxRolloverAmount": 5_000_000},
        {"amount": 50_000, "effectiveAt": format_ms(max(effective_ms, ms("2024-05-10T00:00:00Z"))),
         "expiration": {"duration": "YEAR", "count": 5}, "recurrence": {"interval": "DAY"}})]


def entitle(ctx: EntitlementsContext, feature: str, start_ms: int, now_ms: int) -> None:
    """A monthly metered entitlement measured from `start_ms`, with issueAfterReset and two grants
    (stored directly: the API takes grants from the current period on only)."""
    given = EntitlementInput.model_validate({
        "type": "metered", "featureKey": feature, "issueAfterReset": 10_000_000,
        "usagePeriod": {"interval": "MONTH", "anchor": format_ms(start_ms)}, "measureUsageFrom": format_ms(start_ms)})
    created = entitlements.create_entitlement(ctx, NAMESPACE, SUBJECT, given, now_ms)
    stored = ctx.store.get(NAMESPACE, created["id"])
    assert stored is not None
    for i, grant in enumerate(grants(start_ms)):
        ctx.store.add_grant(NAMESPACE, new_grant(grant, f"{created['id'][:-2]}G{i}", stored[0], now_ms))


def value_rru(client: CostModelDynamoDB, ctx: EntitlementsContext, phase: str, feature: str,
              now_ms: int) -> tuple[float, dict[str, Any]]:
    client.phase = phase
    value = entitlements.entitlement_value(ctx, NAMESPACE, SUBJECT, feature, ValueQuery(), now_ms)
    return client.total("RRU", phase), value


def handler_cpu_ms(ctx: EntitlementsContext, feature: str, now_ms: int, expected: dict[str, Any]) -> list[float]:
    """CPU per value check through the real handler, per round."""
    entitlements_handler.entitlements_context = lambda: ctx  # type: ignore[attr-defined]
    entitlements_handler.now_ms = lambda: now_ms  # type: ignore[attr-defined]
    path = f"/api/v1/subjects/{SUBJECT}/entitlements/{feature}/value"
    event = build_v2_event("GET", path, "", [("host", "bench")], b"", None, {}, "127.0.0.1")
    reply = entitlements_handler.handler(event, sc.CONTEXT)
    assert reply["statusCode"] == 200 and orjson.loads(reply["body"]) == expected, reply
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CHECKS):
            entitlements_handler.handler(event, sc.CONTEXT)
        rounds.append((time.process_time() - started) / CHECKS * 1000)
    return rounds


def main() -> None:
    client = new_client()
    catalog = example_catalog()
    used = Decimal(0)  # the recount: customer-1's tokens of MODEL since PERIOD_START
    kept = []
    for event in generate(sc.EVENTS, sc.START_MS, sc.RATE_PER_S):
        if event.type == "prompt" and event.subject == SUBJECT and event.data["model"] == MODEL:
            used += Decimal(str(event.data["tokens"]))
        kept.append(event)
    events = sc.ingest(client, kept)
    sc.process(client, catalog, list(sc.stream_of(client.stream)), sc.STREAM_BATCH)
    now = sc.closed_now(events[-1].time)
    sc.compact(client, catalog, now)

    client.phase = "setup"
    ctx = context(client)
    meters = MetersStore(client, CATALOG_TABLE)
    for meter in catalog.meters:
        meters.create(NAMESPACE, meter)
    for key, filters in (("gpt_4o_tokens", {"model": MODEL}), ("gpt_4o_tokens_since_2022", {"model": MODEL})):
        create_feature(ctx.features, meters, NAMESPACE, Feature.model_validate(
            {"key": key, "name": key, "meterSlug": sc.QUERY_METER, "meterGroupByFilters": filters}), now)
    entitle(ctx, "gpt_4o_tokens", PERIOD_START, now)
    entitle(ctx, "gpt_4o_tokens_since_2022", OLD_START, now)

    # 10M (issueAfterReset) + 5M + 50k, less the month's usage, which burns the recurring 50k first
    # (priority 1, the earlier expiry); that grant recurs at 2024-05-15T00:00Z, after all the usage
    assert used > 50_000
    expected = {"hasAccess": True, "balance": int(Decimal(15_100_000) - used), "usage": int(used), "overage": 0}
    figures: dict[str, float] = {}
    # checked by feature key, as gateways do (one more read than by id: the subject's active entitlement)
    figures["entitlement_value_rru"], value = value_rru(client, ctx, "value", "gpt_4o_tokens", now)
    assert value == expected, (value, expected)
    for phase, name in (("first_old", "entitlement_value_rru_first_after_24_periods"),
                        ("old", "entitlement_value_rru_after_24_periods")):
        figures[name], value = value_rru(client, ctx, phase, "gpt_4o_tokens_since_2022", now)
        assert value == expected, (value, expected)
    rounds = handler_cpu_ms(ctx, "gpt_4o_tokens", now, expected)
    figures["entitlement_value_cpu_ms"] = statistics.median(rounds)
    figures["entitlement_value_cpu_ms_min"] = min(rounds)
    figures["entitlement_value_cpu_ms_max"] = max(rounds)
    for name, figure in figures.items():
        print(f"{name} {figure:.3f}")


if __name__ == "__main__":
    main()
