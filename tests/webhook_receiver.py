"""A webhook endpoint for tests: a real HTTP server on 127.0.0.1 that verifies every request's Standard
Webhooks signature with the `standardwebhooks` library before recording it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook


class Receiver:
    """A webhook endpoint on 127.0.0.1: verifies signatures, records deliveries, and can fail the first
    `fail_first` attempts of every webhook id (or all of them)."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: list[dict[str, Any]] = []  # verified deliveries: id, headers, body
        self.attempts: dict[str, int] = {}
        self.fail_first = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                Webhook(receiver.secret).verify(body, headers)  # raises on a bad signature
                with receiver.lock:
                    webhook_id = headers["webhook-id"]
                    receiver.attempts[webhook_id] = receiver.attempts.get(webhook_id, 0) + 1
                    failing = receiver.attempts[webhook_id] <= receiver.fail_first
                    if not failing:
                        receiver.received.append({"id": webhook_id, "headers": headers, "raw": body,
                                                  "body": orjson.loads(body)})
                self.send_response(503 if failing else 204)
                self.end_headers()
                if failing:
                    self.wfile.write(b"try later")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/usage"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_subject(self) -> dict[str, dict[str, Any]]:
        return {d["body"]["query"]["subject"]: d["body"] for d in self.received}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
