"""The benchmarks' tables and how their items are classified for cost figures (a category per kind of
item, from its partition key). Kept free of handler imports: the DynamoDB stub's process loads it."""

from __future__ import annotations

EVENTS_TABLE = "bench-events"
USAGE_TABLE = "bench-usage"
CATALOG_TABLE = "bench-catalog"

SLOT_CATEGORIES = {"q": "quarter_slots", "h": "hour_slots", "d": "day_slots"}


def category(table: str, pk: str) -> str:
    if table == EVENTS_TABLE:
        return "time_index" if "#~m#" in pk else "event_puts"  # the time index's manifests (and their index)
    if table == CATALOG_TABLE:
        return catalog_category(pk)
    if "#raw#" in pk:
        return "raw_rows"
    if pk.startswith(("manifest#", "late#")) or pk.endswith("#late"):
        return "manifests"
    if pk == "compaction" or pk.startswith("work#"):
        return "compaction_state"
    parts = pk.split("#")
    if len(parts) >= 3 and parts[1] in SLOT_CATEGORIES:
        return SLOT_CATEGORIES[parts[1]]
    if len(parts) >= 3 and parts[1][:1] == "z" and parts[1][1:].isdigit():
        return "zone_day_slots"  # z{phase in minutes}
    return "other"


def catalog_category(pk: str) -> str:
    """Meters (and backfill markers, zone day requests), API keys, reports, report runs with their deliveries,
    window claims."""
    if pk.endswith("#meter") or pk.startswith(("backfill#", "zonedays#")):
        return "catalog_meters"
    if pk.startswith("$apikey#") or pk.endswith("#apikey"):
        return "catalog_keys"
    if pk.endswith("#runs"):
        return "catalog_runs"
    if pk.endswith("#windows"):
        return "catalog_claims"
    if pk.endswith("#report") or pk.endswith("#runquota"):
        return "catalog_reports"
    return "catalog_other"
