"""`meterline keys create|list|revoke`: API keys, made by whoever can write the catalog table.

Against the local stack (`--data-dir`, default .meterline): if a `meterline dev` holds the directory the
keys go through its engine, else the engine is started on the directory for the command. Against AWS
(`--stack NAME`): the stack's CatalogTableName output, with the caller's AWS credentials.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meterline_local.engine import EngineError


class KeysCommandError(Exception):
    """A one-line reason the command cannot run."""


def add_parser(commands: Any, default_data_dir: Path) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)

    def target(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--data-dir", default=str(default_data_dir),
                           help="the local stack's data directory (default: .meterline)")
        where.add_argument("--stack", help="a deployed stack's name: its catalog table, your AWS credentials")

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
    except (KeysCommandError, EngineError, keys.KeyRequestError) as exc:
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

    if args.stack:
        client, table = _stack_catalog(args.stack)
        yield KeysStore(client=client, table=table)
        return
    with _local_catalog(Path(args.data_dir)) as (client, table):
        yield KeysStore(client=client, table=table)


def _stack_catalog(stack: str) -> tuple[Any, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise KeysCommandError(f"cannot read stack {stack}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    if "CatalogTableName" not in outputs:
        raise KeysCommandError(f"stack {stack} has no CatalogTableName output: is it a Meterline stack?")
    return boto3.client("dynamodb"), outputs["CatalogTableName"]


@contextmanager
def _local_catalog(path: Path) -> Iterator[tuple[Any, str]]:
    from meterline.storage.tables import CATALOG_TABLE
    from meterline_local.engine import DataDirectory, DynamoDBLocal, engine_client
    from meterline_local.stack import LocalConfig, ensure_tables, prepare_environment, table_name

    config = LocalConfig(data_dir=path)
    table = table_name(config, CATALOG_TABLE)
    data = DataDirectory(path)
    try:
        data.acquire()
    except EngineError:  # a meterline dev holds it: use its engine
        endpoint = data.running_endpoint()
        if endpoint is None:
            raise KeysCommandError(f"{path} is in use, but its stack's engine is not known yet: wait until "
                                   "meterline dev has started") from None
        yield engine_client(endpoint), table
        return
    engine = DynamoDBLocal(data.database)
    try:
        engine.start()
        ensure_tables(engine.client(), prepare_environment(config, engine.endpoint_url))
        yield engine.client(), table
    finally:
        engine.stop()
        data.release()
