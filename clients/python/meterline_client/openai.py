"""Token metering of OpenAI chat completions, streaming included, for `OpenAI` and `AsyncOpenAI`.

    client = metered_openai(OpenAI(), meterline=ml, subject="customer-1")

`client.chat.completions.create` then reports every completion's tokens to Meterline, with the completion id
as the event id (the idempotency key), and otherwise behaves as the wrapped client's. Everything else is
passed through to the wrapped client unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from meterline_client.client import Meterline
from meterline_client.events import rfc3339

logger = logging.getLogger("meterline_client")

EVENT_TYPE = "openai"  # seed 002's event: prompt, completion and total tokens in one event
PER_TOKEN_TYPE_EVENT_TYPE = "prompt"  # the `tokens_total` meter's event: one per token type

SubjectOf = str | Callable[[dict[str, Any]], str]
TokenCounter = Callable[[str], int]
ClientT = TypeVar("ClientT", OpenAI, AsyncOpenAI)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def counted(cls, prompt_tokens: int, completion_tokens: int) -> TokenUsage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)

    @classmethod
    def of(cls, usage: CompletionUsage) -> TokenUsage:
        """OpenAI's own numbers, as reported."""
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def metered_openai(client: ClientT, *, meterline: Meterline, subject: SubjectOf, per_token_type: bool = False,
                   fallback: TokenCounter | None = None) -> ClientT:
    """`client` (an `OpenAI` or `AsyncOpenAI`) with its chat completions metered.

    `subject` is the subject's key, or a function of the `create` call's keyword arguments returning it.
    Each completion is one event of type "openai", `data {prompt_tokens, completion_tokens, total_tokens,
    model}`; with `per_token_type` two events of type "prompt", `data {tokens, model, type: input|output}`
    (the `tokens_total` meter's shape). `model` is the model the call asked for.

    Streams get `stream_options.include_usage` and are metered when the usage chunk arrives; that chunk is
    passed on only if the caller asked for usage. A stream that ends without usage (interrupted, or a
    backend that ignores the option) is metered only with `fallback`, a token counter for a text, applied to
    the prompt and to the text streamed so far; without it a warning is logged and nothing is metered.
    Errors of the OpenAI client are raised unchanged and nothing is metered for them."""
    meter = _CompletionMeter(meterline, subject, per_token_type, fallback)
    if isinstance(client, AsyncOpenAI):
        return cast(ClientT, _MeteredAsyncOpenAI(client, meter))
    return cast(ClientT, _MeteredOpenAI(client, meter))


class _CompletionMeter:
    """Turns a completion's usage into events for one subject source."""

    def __init__(self, meterline: Meterline, subject: SubjectOf, per_token_type: bool,
                 fallback: TokenCounter | None) -> None:
        self.meterline = meterline
        self.subject = subject
        self.per_token_type = per_token_type
        self.fallback = fallback

    def subject_of(self, request: dict[str, Any]) -> str:
        # Resolved before the call: a subject that cannot be found must not cost a completion first.
        subject = self.subject(request) if callable(self.subject) else self.subject
        if not isinstance(subject, str) or not subject:
            raise ValueError(f"the subject of an OpenAI call must be a non-empty string, got {subject!r}")
        return subject

    def report(self, request: Mapping[str, Any], subject: str, completion_id: str, created: int,
               response_model: str, usage: TokenUsage) -> None:
        model = request.get("model") or response_model
        time = rfc3339(datetime.fromtimestamp(created, UTC))
        if self.per_token_type:
            events = [{"id": f"{completion_id}:{kind}", "type": PER_TOKEN_TYPE_EVENT_TYPE, "subject": subject,
                       "time": time, "data": {"tokens": tokens, "model": model, "type": kind}}
                      for kind, tokens in (("input", usage.prompt_tokens), ("output", usage.completion_tokens))]
        else:
            events = [{"id": completion_id, "type": EVENT_TYPE, "subject": subject, "time": time,
                       "data": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                                "total_tokens": usage.total_tokens, "model": model}}]
        self.meterline.ingest(events)

    def report_completion(self, request: Mapping[str, Any], subject: str, completion: ChatCompletion) -> None:
        if completion.usage is not None:
            usage = TokenUsage.of(completion.usage)
        else:
            text = "".join(choice.message.content or "" for choice in completion.choices or [])
            estimate = self.estimate(request, text, completion.id)
            if estimate is None:
                return
            usage = estimate
        self.report(request, subject, completion.id, completion.created, completion.model, usage)

    def estimate(self, request: Mapping[str, Any], completion_text: str, completion_id: str) -> TokenUsage | None:
        """The fallback's count for a completion without usage, or None (and a warning) without a fallback."""
        if self.fallback is None:
            logger.warning("completion %s has no usage and no fallback= counter was given: not metered",
                           completion_id)
            return None
        usage = TokenUsage.counted(self.fallback(prompt_text(request)), self.fallback(completion_text))
        logger.info("completion %s has no usage: metered with the fallback's count %s", completion_id, usage)
        return usage


def prompt_text(request: Mapping[str, Any]) -> str:
    """The text of a call's messages, for a fallback counter: string contents and text parts."""
    texts = []
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part["text"] for part in content if isinstance(part, Mapping) and part.get("type") == "text")
    return "\n".join(texts)


def streaming_request(request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The call's arguments with `stream_options.include_usage` on (its other options kept), and whether the
    caller asked for usage themselves."""
    options = dict(request.get("stream_options") or {})
    caller_wants_usage = bool(options.get("include_usage"))
    return {**request, "stream_options": {**options, "include_usage": True}}, caller_wants_usage


class _StreamUsage:
    """What a stream has shown so far: its completion's id, the text, and whether its usage was reported."""

    def __init__(self, meter: _CompletionMeter, request: dict[str, Any], subject: str,
                 caller_wants_usage: bool) -> None:
        self.meter = meter
        self.request = request
        self.subject = subject
        self.caller_wants_usage = caller_wants_usage
        self.completion: tuple[str, int, str] | None = None  # id, created, model
        self.text: list[str] = []
        self.settled = False

    def observe(self, chunk: ChatCompletionChunk) -> bool:
        """Record a chunk; True if the caller is to see it (not the usage chunk they did not ask for)."""
        if self.completion is None:
            self.completion = (chunk.id, chunk.created, chunk.model)
        for choice in chunk.choices or []:
            self.text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or []:
                self.text.append((call.function.arguments or "") if call.function else "")
        if chunk.usage is not None and not self.settled:
            self.settled = True
            usage = TokenUsage.of(chunk.usage)
            self.meter.report(self.request, self.subject, chunk.id, chunk.created, chunk.model, usage)
        is_extra_usage_chunk = chunk.usage is not None and not chunk.choices
        return self.caller_wants_usage or not is_extra_usage_chunk

    def end(self) -> None:
        """The stream is over (done, failed or abandoned): meter it with the fallback if usage never came."""
        if self.settled:
            return
        self.settled = True
        if self.completion is None:
            logger.warning("an OpenAI stream ended before its first chunk: not metered")
            return
        completion_id, created, model = self.completion
        usage = self.meter.estimate(self.request, "".join(self.text), completion_id)
        if usage is not None:
            self.meter.report(self.request, self.subject, completion_id, created, model, usage)


class MeteredStream:
    """An OpenAI `Stream` of chat completion chunks, metered. Iterate it, or use it as a context manager."""

    def __init__(self, stream: Stream[ChatCompletionChunk], usage: _StreamUsage) -> None:
        self._stream = stream
        self._usage = usage
        self._chunks = self._metered()

    def _metered(self) -> Generator[ChatCompletionChunk, None, None]:
        try:
            for chunk in self._stream:
                if self._usage.observe(chunk):
                    yield chunk
        finally:  # also when the stream fails or the caller stops early
            self._usage.end()

    def __next__(self) -> ChatCompletionChunk:
        return next(self._chunks)

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def close(self) -> None:
        self._chunks.close()
        self._stream.close()
        self._usage.end()  # also for a stream closed before its first chunk was read

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:  # `response` and the rest of `Stream`
        return getattr(self._stream, name)


class MeteredAsyncStream:
    """An OpenAI `AsyncStream` of chat completion chunks, metered."""

    def __init__(self, stream: AsyncStream[ChatCompletionChunk], usage: _StreamUsage) -> None:
        self._stream = stream
        self._usage = usage
        self._chunks = self._metered()

    async def _metered(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            async for chunk in self._stream:
                if self._usage.observe(chunk):
                    yield chunk
        finally:
            self._usage.end()

    async def __anext__(self) -> ChatCompletionChunk:
        return await anext(self._chunks)

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def close(self) -> None:
        await self._chunks.aclose()
        await self._stream.close()
        self._usage.end()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Passthrough:
    """Everything not overridden is the wrapped object's."""

    def __init__(self, wrapped: Any, meter: _CompletionMeter) -> None:
        self._wrapped = wrapped
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _MeteredCompletions(_Passthrough):
    def create(self, **request: Any) -> ChatCompletion | MeteredStream:
        subject = self._meter.subject_of(request)
        if not request.get("stream"):
            completion = self._wrapped.create(**request)
            self._meter.report_completion(request, subject, completion)
            return cast(ChatCompletion, completion)
        sent, caller_wants_usage = streaming_request(request)
        stream = self._wrapped.create(**sent)
        return MeteredStream(stream, _StreamUsage(self._meter, request, subject, caller_wants_usage))


class _MeteredAsyncCompletions(_Passthrough):
    async def create(self, **request: Any) -> ChatCompletion | MeteredAsyncStream:
        subject = self._meter.subject_of(request)
        if not request.get("stream"):
            completion = await self._wrapped.create(**request)
            self._meter.report_completion(request, subject, completion)
            return cast(ChatCompletion, completion)
        sent, caller_wants_usage = streaming_request(request)
        stream = await self._wrapped.create(**sent)
        return MeteredAsyncStream(stream, _StreamUsage(self._meter, request, subject, caller_wants_usage))


class _MeteredChat(_Passthrough):
    @property
    def completions(self) -> _MeteredCompletions:
        return _MeteredCompletions(self._wrapped.completions, self._meter)


class _MeteredAsyncChat(_Passthrough):
    @property
    def completions(self) -> _MeteredAsyncCompletions:
        return _MeteredAsyncCompletions(self._wrapped.completions, self._meter)


class _MeteredOpenAI(_Passthrough):
    @property
    def chat(self) -> _MeteredChat:
        return _MeteredChat(self._wrapped.chat, self._meter)

    def with_options(self, **options: Any) -> _MeteredOpenAI:
        return _MeteredOpenAI(self._wrapped.with_options(**options), self._meter)

    copy = with_options


class _MeteredAsyncOpenAI(_Passthrough):
    @property
    def chat(self) -> _MeteredAsyncChat:
        return _MeteredAsyncChat(self._wrapped.chat, self._meter)

    def with_options(self, **options: Any) -> _MeteredAsyncOpenAI:
        return _MeteredAsyncOpenAI(self._wrapped.with_options(**options), self._meter)

    copy = with_options


__all__ = ["MeteredAsyncStream", "MeteredStream", "TokenUsage", "metered_openai"]
