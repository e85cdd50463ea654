"""OpenAI token metering end to end: the real `openai` package against the fake OpenAI server, metered into
`meterline dev` by `metered_openai`, and the usage read back through `/query`: every completion counted once
(a replayed completion id too), errors not at all, per-token-type events on the `tokens_total` meter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from meterline_client import Meterline
from meterline_client.openai import metered_openai
from tests.client.stack import ensure_meter, settled_usage, stored_ids
from tests.fake_openai import FakeOpenAI, fake_openai

pytestmark = pytest.mark.e2e

OPENAI_TOKENS_METER = {"slug": "client_openai_tokens", "eventType": "openai", "aggregation": "SUM",
                       "valueProperty": "$.total_tokens", "groupBy": {"model": "$.model"}}
MESSAGES = [{"role": "user", "content": "Count my tokens please"}]
PROMPT_TOKENS, COMPLETION_TOKENS = 4, 5  # the fake's counts: words


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai() as server:
        yield server


@pytest.fixture
def meterline(local_stack: str) -> Iterator[Meterline]:
    ensure_meter(local_stack, OPENAI_TOKENS_METER)
    with Meterline(local_stack, source="e2e-openai", exit_flush_seconds=None) as client:
        yield client


def test_completions_streams_and_replays_are_counted_once(local_stack: str, meterline: Meterline,
                                                          fake: FakeOpenAI) -> None:
    subject = f"ai-{uuid.uuid4().hex[:8]}"
    client = metered_openai(OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0),
                            meterline=meterline, subject=subject)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    streamed = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    replayed_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    for _ in range(2):  # the same completion reported twice
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                       extra_headers={"x-fake-completion-id": replayed_id})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-fake-scenario": "error"})
    meterline.flush()

    per_completion = PROMPT_TOKENS + COMPLETION_TOKENS
    assert settled_usage(local_stack, "client_openai_tokens", subject, 3 * per_completion) == 3 * per_completion
    assert settled_usage(local_stack, "client_openai_tokens", subject, per_completion, model="gpt-4o") == per_completion
    assert streamed[0].id in stored_ids(local_stack, subject) and len(stored_ids(local_stack, subject)) == 3


def test_per_token_type_events_fill_the_tokens_total_meter(local_stack: str, meterline: Meterline,
                                                           fake: FakeOpenAI) -> None:
    subject = f"ai-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        async_client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        client = metered_openai(async_client, meterline=meterline, subject=subject, per_token_type=True)
        await client.chat.completions.create(model="gpt-4", messages=MESSAGES)
        stream = await client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        await async_client.close()

    asyncio.run(run())
    meterline.flush()
    assert settled_usage(local_stack, "tokens_total", subject, 2 * PROMPT_TOKENS, type="input") == 2 * PROMPT_TOKENS
    assert settled_usage(local_stack, "tokens_total", subject, 2 * COMPLETION_TOKENS,
                         type="output") == 2 * COMPLETION_TOKENS
    ids = stored_ids(local_stack, subject)
    assert len(ids) == 4 and {event_id.rpartition(":")[2] for event_id in ids} == {"input", "output"}
