"""A fake OpenAI chat completions API on 127.0.0.1 for tests and the OpenAI example, answering as OpenAI does:
a `chat.completion` object, or server-sent events of `chat.completion.chunk`s ending in `data: [DONE]`. With
`stream_options.include_usage` every chunk carries `"usage": null` and one more chunk, with `"choices": []`,
carries the usage; without it chunks have no `usage` key.

Tokens are words: the prompt's (every message's text) and the reply's, so counts are easy to predict. The
request header `x-fake-scenario` picks a behaviour: `interrupt` (the connection drops after two content
chunks), `no-usage` (a backend that ignores include_usage), `error` (a 400 invalid_request_error), and
`x-fake-completion-id` fixes the completion id (a replayed completion).

    python tests/fake_openai.py [--port 8765]   # then OPENAI_BASE_URL=http://127.0.0.1:8765/v1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Metering every token exactly once"
FINGERPRINT = "fp_f85bea6784"


def words(text: str) -> int:
    return len(text.split())


def prompt_tokens(request: dict[str, Any]) -> int:
    total = 0
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += words(content)
        elif isinstance(content, list):
            total += sum(words(part.get("text", "")) for part in content if part.get("type") == "text")
    return total


def usage_of(request: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = prompt_tokens(request), words(REPLY)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def answered_model(request: dict[str, Any]) -> str:
    return f"{request['model']}-2024-07-18"  # OpenAI answers with the dated snapshot of the model asked for


@dataclass
class FakeOpenAI:
    """Requests received (their JSON bodies and headers); the server's base URL once started."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    base_url: str = ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams, so a dropped connection is an error, not an end
    fake: FakeOpenAI

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.fake.requests.append(request)
        self.fake.headers.append({name.lower(): value for name, value in self.headers.items()})
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"Unknown request URL: POST {self.path}.",
                                       "type": "invalid_request_error", "param": None, "code": "unknown_url"}})
            return
        scenario = self.headers.get("x-fake-scenario", "")
        if scenario == "error":
            self._json(400, {"error": {"message": "Invalid value for 'messages': must not be empty.",
                                       "type": "invalid_request_error", "param": "messages", "code": None}})
            return
        completion_id = self.headers.get("x-fake-completion-id") or f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if request.get("stream"):
            self._stream(request, completion_id, scenario)
        else:
            self._json(200, {
                "id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": answered_model(request),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage_of(request), "service_tier": "default", "system_fingerprint": FINGERPRINT})

    def _stream(self, request: dict[str, Any], completion_id: str, scenario: str) -> None:
        include_usage = bool((request.get("stream_options") or {}).get("include_usage")) and scenario != "no-usage"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": answered_model(request), "service_tier": "default", "system_fingerprint": FINGERPRINT,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                body["usage"] = None
            return body

        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._event(chunk({"role": "assistant", "content": "", "refusal": None}))
        for index, word in enumerate(REPLY.split()):
            if scenario == "interrupt" and index == 2:
                self.wfile.flush()
                self.close_connection = True  # no terminating chunk: the client sees a broken body
                return
            self._event(chunk({"content": word if index == 0 else f" {word}"}))
        self._event(chunk({}, finish_reason="stop"))
        if include_usage:
            self._event({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                         "model": answered_model(request), "service_tier": "default",
                         "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage_of(request)})
        self._write(b"data: [DONE]\n\n")
        self._write(b"")  # the terminating chunk

    def _event(self, body: dict[str, Any]) -> None:
        self._write(f"data: {json.dumps(body)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, status: int, body: dict[str, Any]) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_openai(port: int = 0) -> Iterator[FakeOpenAI]:
    """The fake on 127.0.0.1 (a free port unless given); its `base_url` is the client's, `.../v1`."""
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", port), type("FakeHandler", (Handler,), {"fake": fake}))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI chat completions API")
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    with fake_openai(port) as fake:
        print(f"fake OpenAI on {fake.base_url} (OPENAI_BASE_URL={fake.base_url} OPENAI_API_KEY=anything)", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
