"""Meter the tokens of OpenAI chat completions, streaming included, into Meterline.

    make dev                                                       # in one shell
    OPENAI_API_KEY=sk-... .venv/bin/python examples/openai/meter_openai.py customer-1

Without an OpenAI account, run it against the fake OpenAI server the tests use:

    .venv/bin/python tests/fake_openai.py --port 8765 &
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=fake .venv/bin/python examples/openai/meter_openai.py

The events have the shape of the example meter `tokens_total` (type `prompt`, one event per token type), so
the usage shows there with no meter to create. The `openai` client reads OPENAI_API_KEY and OPENAI_BASE_URL
itself; METERLINE_URL (default http://127.0.0.1:8888) and METERLINE_API_KEY say where usage goes, and
OPENAI_MODEL which model to ask (default gpt-4o-mini).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from openai import OpenAI

from meterline_client import Meterline
from meterline_client.openai import metered_openai

METERLINE_URL = os.environ.get("METERLINE_URL", "http://127.0.0.1:8888")
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


def tokens_by_type(subject: str) -> dict[str, float]:
    """The subject's `tokens_total` over the last hour, by token type, as Meterline counts it."""
    now = datetime.now(UTC)
    key = os.environ.get("METERLINE_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(f"{METERLINE_URL}/api/v1/meters/tokens_total/query", headers=headers, timeout=10, params={
        "subject": subject, "groupBy": "type", "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat()})
    answer.raise_for_status()
    return {row["groupBy"]["type"]: row["value"] for row in answer.json()["data"]}


def main(subject: str) -> None:
    before = tokens_by_type(subject)
    sent = {"input": 0, "output": 0}
    with Meterline(METERLINE_URL, source="openai-example") as meterline:
        client = metered_openai(OpenAI(), meterline=meterline, subject=subject, per_token_type=True)

        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello to the metering team."}])
        print(f"{completion.id}: {completion.choices[0].message.content}")
        if completion.usage:
            sent["input"] += completion.usage.prompt_tokens
            sent["output"] += completion.usage.completion_tokens

        # Asking for usage ourselves, we also get the last chunk that carries it (otherwise the wrapper hides it).
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count from one to five."}], stream=True,
            stream_options={"include_usage": True})
        with stream:
            for chunk in stream:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
                if chunk.usage:
                    sent["input"] += chunk.usage.prompt_tokens
                    sent["output"] += chunk.usage.completion_tokens
        print()
    # Leaving the `with` flushed every event; Meterline counts them within about a second.
    expected = {kind: before.get(kind, 0) + tokens for kind, tokens in sent.items()}
    deadline = time.monotonic() + 15
    while (counted := tokens_by_type(subject)) != expected and time.monotonic() < deadline:
        time.sleep(0.25)
    print(f"tokens sent: {sent}; tokens_total of {subject} now: {counted}")
    if counted != expected:
        sys.exit(f"Meterline counted {counted}, expected {expected}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "customer-1")
