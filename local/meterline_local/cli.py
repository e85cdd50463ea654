"""`meterline` command line: `meterline dev` runs the embedded local stack; `meterline keys` makes,
lists and revokes API keys; `meterline recount` rebuilds counters of a time range (local or deployed)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from meterline_local import keys_cli, recount_cli

DEFAULT_DATA_DIR = Path(".meterline")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _dev(args: argparse.Namespace) -> int:
    from meterline_local.engine import EngineError
    from meterline_local.stack import DEFAULT_METERS_FILE, LocalConfig, LocalStack

    meters_file: Path | None = Path(args.config) if args.config else DEFAULT_METERS_FILE
    if args.config is None and not DEFAULT_METERS_FILE.exists():
        logging.getLogger("dev").warning("no meters file given and %s not found; no meters",
                                         DEFAULT_METERS_FILE)
        meters_file = None
    data_dir = None if args.in_memory else Path(args.data_dir)
    if args.auth and data_dir is None:
        print("meterline dev: --auth needs a data directory (keys are made with meterline keys --data-dir), "
              "not --in-memory", file=sys.stderr, flush=True)
        return 2
    allow_loopback = args.allow_loopback
    exposed = args.host not in LOOPBACK_HOSTS
    if exposed and not args.auth:
        logging.getLogger("dev").warning(
            "listening on %s without authentication: anyone who reaches this address can read and change "
            "everything (pass --auth to require API keys)", args.host)
        if allow_loopback is None:
            allow_loopback = False  # webhooks to this machine's own services only when asked for
    config = LocalConfig(host=args.host, port=args.port, meters_file=meters_file, namespace=args.namespace,
                         data_dir=data_dir, retention_days=args.retention_days, auth=args.auth,
                         webhook_allow_loopback=True if allow_loopback is None else allow_loopback)
    # SIGTERM stops the stack like Ctrl-C, also while it is still starting. SIGINT gets Python's own
    # handler back: a parent that ignores SIGINT (a test runner's worker, nohup) passes that on, and an
    # ignored SIGINT would never stop the stack.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    stack = LocalStack(config)
    try:
        stack.start()
    except (EngineError, ValueError, OSError) as exc:  # no java, a busy port, a bad data dir or config file
        print(f"meterline dev: {exc}", file=sys.stderr, flush=True)
        stack.stop()
        return 2
    except KeyboardInterrupt:
        stack.stop()
        return 130
    if args.auth:
        where = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
        access = f"API keys required: meterline keys create --namespace NS --scope admin{where}"
    else:
        access = f"open: no authentication, every request acts in namespace {args.namespace} (--auth requires keys)"
    print(f"Meterline local stack on {stack.url} (meters: {meters_file or 'none'}; "
          f"data: {data_dir or 'in memory'}; {access}) started in {time.perf_counter() - started:.1f}s; "
          "Ctrl-C stops it", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    print("stopping...", flush=True)
    stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meterline", description="Meterline: serverless usage metering")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the embedded local stack (no AWS account, no Docker)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8888)
    dev.add_argument("--config", default=None, help="meters YAML file (default: examples/meters.yaml)")
    dev.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                     help="where events, meters, reports and counters are kept across restarts (default: .meterline)")
    dev.add_argument("--in-memory", action="store_true", help="keep nothing: DynamoDB Local runs in memory")
    dev.add_argument("--namespace", default="default", help="namespace of every request when auth is off")
    dev.add_argument("--auth", action="store_true",
                     help="require API keys (Authorization: Bearer om_...), as a deployed stack does")
    dev.add_argument("--retention-days", type=int, default=400)
    dev.add_argument("--allow-loopback", action=argparse.BooleanOptionalAction, default=None,
                     help="allow usage webhooks to loopback addresses such as localhost (default: on, unless "
                          "--host exposes an unauthenticated stack; always off on AWS)")
    dev.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    keys_cli.add_parser(commands, DEFAULT_DATA_DIR)
    recount_cli.add_parser(commands, DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    if args.command in ("keys", "recount"):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
        return keys_cli.run(args) if args.command == "keys" else recount_cli.run(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # (local loggers are named "dev.*": Powertools filters root-handler records whose logger name
    # contains its service name, "meterline")
    if args.command == "dev":
        return _dev(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
