"""Where an operator command works: a local stack's data directory, or a deployed stack.

Locally (`--data-dir`, default .meterline): if a `meterline dev` holds the directory the command goes
through its engine, else the engine is started on the directory for the command. On AWS (`--stack
NAME`): the stack's `<Table>TableName` outputs, with the caller's AWS credentials.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meterline_local.engine import EngineError


class CommandError(Exception):
    """A one-line reason the command cannot run."""


def add_target(parser: argparse.ArgumentParser, default_data_dir: Path, what: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default=str(default_data_dir),
                       help="the local stack's data directory (default: .meterline)")
    where.add_argument("--stack", help=f"a deployed stack's name: its {what}, your AWS credentials")


@contextmanager
def tables(args: argparse.Namespace, needs: tuple[str, ...] = ("Events", "Usage", "Catalog")
           ) -> Iterator[tuple[Any, dict[str, str]]]:
    """A DynamoDB client and the names of the tables `needs` names (by logical name)."""
    if args.stack:
        yield _stack_tables(args.stack, needs)
        return
    with _local_tables(Path(args.data_dir)) as found:
        yield found


def _stack_tables(stack: str, needs: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise CommandError(f"cannot read stack {stack}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    names = {name: outputs.get(f"{name}TableName") for name in needs}
    missing = sorted(f"{name}TableName" for name, table in names.items() if table is None)
    if missing:
        raise CommandError(f"stack {stack} has no {', '.join(missing)} output: is it a Meterline stack?")
    return boto3.client("dynamodb"), {name: str(table) for name, table in names.items()}


@contextmanager
def _local_tables(path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    from meterline.storage.tables import ALL_TABLES
    from meterline_local.engine import DataDirectory, DynamoDBLocal, engine_client
    from meterline_local.stack import LocalConfig, ensure_tables, prepare_environment, table_name

    config = LocalConfig(data_dir=path)
    names = {spec.logical_name: table_name(config, spec) for spec in ALL_TABLES}
    data = DataDirectory(path)
    try:
        data.acquire()
    except EngineError:  # a meterline dev holds it: use its engine
        endpoint = data.running_endpoint()
        if endpoint is None:
            raise CommandError(f"{path} is in use, but its stack's engine is not known yet: wait until "
                               "meterline dev has started") from None
        yield engine_client(endpoint), names
        return
    engine = DynamoDBLocal(data.database)
    try:
        engine.start()
        ensure_tables(engine.client(), prepare_environment(config, engine.endpoint_url))
        yield engine.client(), names
    finally:
        engine.stop()
        data.release()
