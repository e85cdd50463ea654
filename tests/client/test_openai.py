"""`metered_openai`: the real `openai` package against the fake OpenAI server (tests/fake_openai.py), events
caught by the fake Meterline API. Non-streaming, streaming with and without caller-requested usage,
interrupted streams with and without a fallback, per-token-type events, AsyncOpenAI, and OpenAI errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from meterline_client import Meterline
from meterline_client.openai import MeteredStream, metered_openai
from tests.client.fake_meterline import FakeMeterlineAPI
from tests.fake_openai import REPLY, FakeOpenAI, fake_openai

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does Meterline do?"}]
PROMPT_TOKENS, COMPLETION_TOKENS = 6, 5  # words, as the fake counts tokens


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with fake_openai() as fake:
        yield fake


@pytest.fixture
def openai_client(server: FakeOpenAI) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


def events(api: FakeMeterlineAPI, meterline: Meterline) -> list[dict[str, Any]]:
    meterline.flush()
    return api.stored_events


def test_a_completion_is_one_event_with_its_id_and_time(api: FakeMeterlineAPI, meterline: Meterline,
                                                        openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == REPLY
    [event] = events(api, meterline)
    assert event["id"] == completion.id and event["type"] == "openai" and event["subject"] == "customer-1"
    assert event["time"] == datetime.fromtimestamp(completion.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert event["data"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS, "model": "gpt-4o-mini"}


def test_the_subject_may_come_from_the_call(api: FakeMeterlineAPI, meterline: Meterline,
                                            openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject=lambda request: request["user"])
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="customer-7")
    assert [event["subject"] for event in events(api, meterline)] == ["customer-7"]
    with pytest.raises(ValueError, match="subject"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="")


def test_a_stream_is_metered_when_its_usage_arrives_and_the_extra_chunk_is_hidden(
        api: FakeMeterlineAPI, meterline: Meterline, server: FakeOpenAI, openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                            stream_options={"include_obfuscation": False})
    chunks = list(stream)
    assert server.requests[-1]["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == REPLY
    assert all(chunk.choices for chunk in chunks)  # the usage chunk was not passed on
    [event] = events(api, meterline)
    assert event["id"] == chunks[0].id
    assert event["data"]["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS


def test_a_caller_who_asked_for_usage_sees_the_usage_chunk(api: FakeMeterlineAPI, meterline: Meterline,
                                                           openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                        stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == PROMPT_TOKENS + COMPLETION_TOKENS
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert len(events(api, meterline)) == 1


def test_an_interrupted_stream_without_a_fallback_is_not_metered_and_warns(
        api: FakeMeterlineAPI, meterline: Meterline, openai_client: OpenAI,
        caplog: pytest.LogCaptureFixture) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                            extra_headers={"x-fake-scenario": "interrupt"})
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "Metering", " every"]
    assert events(api, meterline) == []
    assert "no usage and no fallback" in caplog.text


def test_an_interrupted_stream_with_a_fallback_meters_what_was_streamed(
        api: FakeMeterlineAPI, meterline: Meterline, openai_client: OpenAI) -> None:
    def count_words(text: str) -> int:
        return len(text.split())

    client = metered_openai(openai_client, meterline=meterline, subject="customer-1", fallback=count_words)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                            extra_headers={"x-fake-scenario": "interrupt"})
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    [event] = events(api, meterline)
    assert event["data"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 2, "total_tokens": 8,
                             "model": "gpt-4o-mini"}


def test_a_stream_the_caller_stops_reading_is_settled_with_the_fallback(
        api: FakeMeterlineAPI, meterline: Meterline, openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1",
                            fallback=lambda text: len(text.split()))
    with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
        assert isinstance(stream, MeteredStream)
        for chunk in stream:
            if chunk.choices[0].delta.content == "Metering":
                break
    [event] = events(api, meterline)
    assert event["data"]["completion_tokens"] == 1


def test_a_backend_without_usage_chunks_uses_the_fallback(api: FakeMeterlineAPI, meterline: Meterline,
                                                          openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1",
                            fallback=lambda text: len(text.split()))
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                 extra_headers={"x-fake-scenario": "no-usage"}))
    [event] = events(api, meterline)
    assert event["id"] == chunks[0].id
    assert event["data"]["completion_tokens"] == COMPLETION_TOKENS


def test_per_token_type_emits_the_tokens_total_shape_with_distinct_ids(
        api: FakeMeterlineAPI, meterline: Meterline, openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1", per_token_type=True)
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    by_id = {event["id"]: event for event in events(api, meterline)}
    for completion_id in (completion.id, chunks[0].id):
        assert by_id[f"{completion_id}:input"]["data"] == {"tokens": PROMPT_TOKENS, "model": "gpt-4o", "type": "input"}
        assert by_id[f"{completion_id}:output"]["data"] == {"tokens": COMPLETION_TOKENS, "model": "gpt-4o",
                                                            "type": "output"}
    assert {event["type"] for event in by_id.values()} == {"prompt"} and len(by_id) == 4


def test_openai_errors_are_raised_unchanged_and_nothing_is_metered(
        api: FakeMeterlineAPI, meterline: Meterline, openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=stream,
                                           extra_headers={"x-fake-scenario": "error"})
        assert refused.value.status_code == 400 and refused.value.param == "messages"
    assert events(api, meterline) == []


def test_everything_else_is_the_wrapped_clients(api: FakeMeterlineAPI, meterline: Meterline,
                                                openai_client: OpenAI) -> None:
    client = metered_openai(openai_client, meterline=meterline, subject="customer-1")
    assert client.base_url == openai_client.base_url
    assert client.models is openai_client.models
    client.with_options(timeout=5).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(events(api, meterline)) == 1  # a copy with other options is metered too


def test_async_openai(api: FakeMeterlineAPI, meterline: Meterline, server: FakeOpenAI) -> None:
    async def run() -> tuple[str, list[Any]]:
        async_client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        client = metered_openai(async_client, meterline=meterline, subject="customer-2")
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=[],
                                                 extra_headers={"x-fake-scenario": "error"})
        await async_client.close()
        return completion.id, chunks

    completion_id, chunks = asyncio.run(run())
    assert all(chunk.choices for chunk in chunks)
    stored = {event["id"]: event for event in events(api, meterline)}
    assert set(stored) == {completion_id, chunks[0].id}
    assert all(event["subject"] == "customer-2" and event["data"]["total_tokens"] == 11 for event in stored.values())
