"""`meterline recount --namespace NS [--meter SLUG] --from T1 --to T2`: rebuild a namespace's counting
rows for a time range from the stored events (meterline.services.recount), on a
local data directory or a deployed stack (meterline_local.targets). The compactor (the running stack's)
then re-folds what it touched. Safe to repeat."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meterline_local.engine import EngineError
from meterline_local.targets import CommandError, add_target, tables


def add_parser(commands: Any, default_data_dir: Path) -> None:
    recount = commands.add_parser("recount", help="rebuild counters of a time range from the stored events")
    recount.add_argument("--namespace", required=True)
    recount.add_argument("--meter", default=None, help="one meter's slug (default: every meter of the namespace)")
    recount.add_argument("--from", dest="from_", required=True, help="RFC 3339 start of the range (inclusive)")
    recount.add_argument("--to", required=True, help="RFC 3339 end of the range (exclusive)")
    recount.add_argument("--retention-days", type=int, default=400,
                         help="the stack's METERLINE_RETENTION_DAYS, for the rows' expiry (default 400)")
    add_target(recount, default_data_dir, "tables")


def run(args: argparse.Namespace) -> int:
    from meterline.domain.meters import MeterCatalog
    from meterline.domain.timeutil import now_ms, parse_rfc3339, to_epoch_ms
    from meterline.errors import NotFound
    from meterline.services.recount import Recounter, describe
    from meterline.storage.events_store import EventsStore
    from meterline.storage.meters_store import MetersStore
    from meterline.storage.usage_store import UsageStore

    try:
        start, end = (to_epoch_ms(parse_rfc3339(value)) for value in (args.from_, args.to))
    except ValueError as exc:
        print(f"meterline recount: --from and --to {exc}", file=sys.stderr, flush=True)
        return 2
    if start >= end:
        print("meterline recount: --from must be before --to", file=sys.stderr, flush=True)
        return 2
    try:
        with tables(args) as (client, names):
            meters = MetersStore(client=client, table=names["Catalog"])
            recounter = Recounter(
                EventsStore(client=client, table=names["Events"], retention_days=args.retention_days),
                UsageStore(client=client, table=names["Usage"], retention_days=args.retention_days),
                lambda namespace: MeterCatalog(meters.meters(namespace)))
            report = recounter.run(args.namespace, start, end, now_ms(), args.meter)
    except (CommandError, EngineError, NotFound) as exc:
        print(f"meterline recount: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"Recounted namespace {args.namespace}{f' meter {args.meter}' if args.meter else ''} from {args.from_} "
          f"to {args.to}: {describe(report)}. The compactor re-folds the closed quarters within minutes.",
          flush=True)
    return 0
