"""`meterline keys create|list|revoke`: API keys, made by whoever can write the catalog table (of a
local data directory or a deployed stack: meterline_local.targets)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meterline_local.engine import EngineError
from meterline_local.targets import CommandError, add_target, tables


def add_parser(commands: Any, default_data_dir: Path) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)

    def target(parser: argparse.ArgumentParser) -> None:
        add_target(parser, default_data_dir, "catalog table")

    create = actions.add_parser("create", help="make a key; it is printed once, on the last line")
    create.add_argument("--namespace", required=True)
    create.add_argument("--scope", required=True, choices=["ingest", "read", "admin"])
    create.add_argument("--name", default=None, help="what the key is for (default: '<scope> key')")
    target(create)
    listing = actions.add_parser("list", help="the keys of a namespace (never the keys themselves)")
    listing.add_argument("--namespace", required=True)
    target(listing)
    revoke = actions.add_parser("revoke", help="revoke a key by its id; it stops working within 60 s")
    revoke.add_argument("key_id")
    target(revoke)


def run(args: argparse.Namespace) -> int:
    from meterline.services import keys

    try:
        with keys_store(args) as store:
            return _ACTIONS[args.action](keys, store, args)
    except (CommandError, EngineError, keys.KeyRequestError) as exc:
        print(f"meterline keys: {exc}", file=sys.stderr, flush=True)
        return 2


def _create(keys: Any, store: Any, args: argparse.Namespace) -> int:
    from meterline.domain.timeutil import now_ms

    made = keys.create_key(store, args.namespace, args.scope, args.name, now_ms())
    print(f"Created {made.stored.scope.value} key {made.stored.key_id} ({made.stored.name!r}) in namespace "
          f"{made.stored.namespace}. Keep it now: it is not shown again.")
    print(made.key, flush=True)
    return 0


def _list(keys: Any, store: Any, args: argparse.Namespace) -> int:
    found = [keys.key_summary(key) for key in keys.list_keys(store, args.namespace)]
    if not found:
        print(f"namespace {args.namespace} has no keys")
        return 0
    columns = ["id", "scope", "name", "createdAt", "lastUsedAt", "revokedAt"]
    widths = {c: max(len(c), *(len(str(k[c] or "-")) for k in found)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for key in found:
        print("  ".join(str(key[c] or "-").ljust(widths[c]) for c in columns))
    return 0


def _revoke(keys: Any, store: Any, args: argparse.Namespace) -> int:
    from meterline.domain.timeutil import now_ms

    revoked = keys.revoke_key(store, args.key_id, now_ms())
    print(f"Revoked key {revoked.key_id} of namespace {revoked.namespace}; cached answers expire within 60 s.")
    return 0


_ACTIONS: dict[str, Callable[[Any, Any, argparse.Namespace], int]] = {
    "create": _create, "list": _list, "revoke": _revoke}


@contextmanager
def keys_store(args: argparse.Namespace) -> Iterator[Any]:
    from meterline.storage.keys_store import KeysStore

    with tables(args, needs=("Catalog",)) as (client, names):
        yield KeysStore(client=client, table=names["Catalog"])
