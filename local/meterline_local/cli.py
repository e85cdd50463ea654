"""`meterline` command line: `meterline dev` runs the embedded local stack."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path


def _dev(args: argparse.Namespace) -> int:
    from meterline_local.stack import DEFAULT_METERS_FILE, LocalConfig, LocalStack

    meters_file: Path | None = Path(args.config) if args.config else DEFAULT_METERS_FILE
    if args.config is None and not DEFAULT_METERS_FILE.exists():
        logging.getLogger("dev").warning("no meters file given and %s not found; no meters",
                                                     DEFAULT_METERS_FILE)
        meters_file = None
    config = LocalConfig(host=args.host, port=args.port, meters_file=meters_file, namespace=args.namespace,
                         retention_days=args.retention_days, webhook_allow_loopback=args.allow_loopback)
    started = time.perf_counter()
    stack = LocalStack(config)
    try:
        stack.start()
    except Exception as exc:  # a bad config file or a busy port: say so, no traceback
        print(f"meterline dev: {exc}", file=sys.stderr)
        stack.stop()
        return 2
    print(f"Meterline local stack on {stack.url} (meters: {meters_file or 'none'}) "
          f"started in {time.perf_counter() - started:.1f}s; Ctrl-C stops it", flush=True)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
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
