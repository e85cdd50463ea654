"""`meterline` command line: `meterline dev` runs the embedded local stack."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_DATA_DIR = Path(".meterline")


def _dev(args: argparse.Namespace) -> int:
    from meterline_local.engine import EngineError
    from meterline_local.stack import DEFAULT_METERS_FILE, LocalConfig, LocalStack

    meters_file: Path | None = Path(args.config) if args.config else DEFAULT_METERS_FILE
    if args.config is None and not DEFAULT_METERS_FILE.exists():
        logging.getLogger("dev").warning("no meters file given and %s not found; no meters",
                                         DEFAULT_METERS_FILE)
        meters_file = None
    data_dir = None if args.in_memory else Path(args.data_dir)
    config = LocalConfig(host=args.host, port=args.port, meters_file=meters_file, namespace=args.namespace,
                         data_dir=data_dir, retention_days=args.retention_days,
                         webhook_allow_loopback=args.allow_loopback)
    # SIGTERM stops the stack like Ctrl-C, also while it is still starting.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
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
    print(f"Meterline local stack on {stack.url} (meters: {meters_file or 'none'}; "
          f"data: {data_dir or 'in memory'}) started in {time.perf_counter() - started:.1f}s; Ctrl-C stops it",
          flush=True)
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
    dev.add_argument("--namespace", default="default", help="namespace of unauthenticated requests")
    dev.add_argument("--retention-days", type=int, default=400)
    dev.add_argument("--allow-loopback", action=argparse.BooleanOptionalAction, default=True,
                     help="allow usage webhooks to loopback addresses such as localhost (default: on; off on AWS)")
    dev.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
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
