"""The anthropic provider against a real (fake) Messages API server, through the official SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from hangar.runtime.models import (
    AnthropicProvider,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
    Usage,
)
from hangar.testing import free_port
from hangar.testing.fake_anthropic import DEFAULT_TEXT, FakeAnthropic, FakeReply
from tests.helpers import strict

KEY = "sk-ant-upstream-SECRET-" + "z" * 24
TOOLS = [
    {"name": "bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {}}}
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    fake.reset()
    p = AnthropicProvider(fake.base_url, KEY, timeout_s=10)
    yield p
    await p.aclose()


def request(**kw: Any) -> ModelRequest:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [],
    }
    return ModelRequest(**{**base, **kw})


async def run(p: AnthropicProvider, req: ModelRequest | None = None) -> tuple[list[TextDelta], ModelResponse]:
    items = [item async for item in p.stream(req or request())]
    assert isinstance(items[-1], ModelResponse)
    thinking = sum(1 for b in items[-1].content if b["type"] == "thinking")
    assert sum(isinstance(i, ThinkingStart) for i in items) == thinking, (
        "one ThinkingStart per thinking block"
    )
    deltas = [i for i in items[:-1] if not isinstance(i, ThinkingStart)]
    assert all(isinstance(i, TextDelta) for i in deltas)
    return deltas, items[-1]  # type: ignore[return-value]


async def test_streams_text(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.enqueue(
        FakeReply.text("Hello there, this is a streamed reply.", input_tokens=12, cache_read_input_tokens=3)
    )
    deltas, response = await run(provider, request(max_tokens=321, effort="high"))
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == "Hello there, this is a streamed reply."
    assert {d.index for d in deltas} == {0}
    assert response.content == [{"type": "text", "text": "Hello there, this is a streamed reply."}]
    assert response.stop_reason == "end_turn"
    assert response.usage.input_tokens == 12
    assert response.usage.cache_read_input_tokens == 3
    assert response.usage.output_tokens > 0

    [sent] = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.body["model"] == "claude-sonnet-4-6"
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [{"role": "user", "content": "Hello"}]
    assert sent.body["max_tokens"] == 321
    assert sent.body["stream"] is True
    assert sent.body["output_config"] == {"effort": "high"}
    assert "tools" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_streams_tool_use_with_input_json(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    tool_input = {"command": "find . -name '*.py' | head", "timeout": 30, "nested": {"a": [1, 2, 3]}}
    fake.enqueue(
        FakeReply.tool_use("bash", tool_input, tool_id="toolu_01", text="Let me check.", chunk_chars=5)
    )
    deltas, response = await run(provider, request(tools=TOOLS))
    assert "".join(d.text for d in deltas) == "Let me check."
    assert response.stop_reason == "tool_use"
    assert response.content == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": tool_input},
    ]
    assert fake.requests[0].body["tools"] == TOOLS


async def test_text_indices_are_dense_across_text_blocks(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.enqueue(
        FakeReply(
            blocks=[
                {"type": "thinking", "thinking": "hmm, let me think"},
                {"type": "text", "text": "first part"},
                {"type": "tool_use", "id": "toolu_x", "name": "bash", "input": {}},
                {"type": "text", "text": "second part"},
            ],
            stop_reason="tool_use",
        )
    )
    deltas, response = await run(provider)
    assert "".join(d.text for d in deltas if d.index == 0) == "first part"
    assert "".join(d.text for d in deltas if d.index == 1) == "second part"
    assert response.content[0] == {
        "type": "thinking",
        "thinking": "hmm, let me think",
        "signature": "fake-signature",
    }
    assert [b["type"] for b in response.content] == ["thinking", "text", "tool_use", "text"]


async def test_history_with_tool_results_and_images_is_sent_as_is(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
    ]
    await run(provider, request(messages=messages, tools=TOOLS))
    assert fake.requests[0].body["messages"] == messages


@pytest.mark.parametrize(
    ("reply", "kind", "status", "retryable", "retry_after"),
    [
        (FakeReply.failure(429, retry_after=7), "rate_limited", 429, True, 7.0),
        (FakeReply.failure(429, headers={"retry-after-ms": "1500"}), "rate_limited", 429, True, 1.5),
        (FakeReply.failure(529), "overloaded", 529, True, None),
        (FakeReply.failure(500), "request_failed", 500, True, None),
        (FakeReply.failure(503, error_type="api_error"), "request_failed", 503, True, None),
        (FakeReply.failure(408), "timeout", 408, True, None),
        (FakeReply.failure(401), "authentication", 401, False, None),
        (FakeReply.failure(403), "authentication", 403, False, None),
        (FakeReply.failure(400, "messages: bad"), "invalid_request", 400, False, None),
        (FakeReply.failure(404, "model: claude-nope"), "invalid_request", 404, False, None),
    ],
)
async def test_error_mapping_without_silent_retries(
    provider: AnthropicProvider,
    fake: FakeAnthropic,
    reply: FakeReply,
    kind: str,
    status: int,
    retryable: bool,
    retry_after: float | None,
) -> None:
    fake.enqueue(reply)
    with pytest.raises(ModelError) as info:
        await run(provider)
    err = info.value
    assert (err.kind, err.status, err.retryable, err.retry_after_s) == (kind, status, retryable, retry_after)
    assert len(fake.requests) == 1, "the SDK must not retry on its own"
    assert fake.pending == 0
    for text in (str(err), repr(err), err.message, str(err.__cause__)):
        assert KEY not in text


async def test_error_message_carries_upstream_message_but_never_the_key(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.enqueue_error(401, f"invalid x-api-key {KEY}")
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert "invalid x-api-key [redacted]" in info.value.message
    assert KEY not in str(info.value)


async def test_retry_after_http_date(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    fake.enqueue_error(429, headers={"retry-after": when})
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert info.value.retry_after_s is not None and 25 <= info.value.retry_after_s <= 31


async def test_mid_stream_error_event(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.enqueue_stream_error("overloaded_error", "Overloaded")
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert (info.value.kind, info.value.status, info.value.retryable) == ("overloaded", 529, True)
    assert len(fake.requests) == 1


async def test_stream_ending_before_message_stop(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.enqueue(FakeReply.text("cut short", truncate=True))
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert (info.value.kind, info.value.retryable) == ("request_failed", True)


async def test_timeout(fake: FakeAnthropic) -> None:
    fake.reset()
    fake.enqueue_stall()
    p = AnthropicProvider(fake.base_url, KEY, timeout_s=0.3)
    try:
        with pytest.raises(ModelError) as info:
            await run(p)
        assert (info.value.kind, info.value.retryable) == ("timeout", True)
        assert len(fake.requests) == 1
    finally:
        await p.aclose()


async def test_connection_refused() -> None:
    p = AnthropicProvider(f"http://127.0.0.1:{free_port()}", KEY, timeout_s=5)
    try:
        with pytest.raises(ModelError) as info:
            await run(p)
        assert (info.value.kind, info.value.retryable, info.value.status) == ("request_failed", True, None)
        assert KEY not in str(info.value)
    finally:
        await p.aclose()


async def test_missing_key_is_a_clear_authentication_error(fake: FakeAnthropic) -> None:
    fake.reset()
    p = AnthropicProvider(fake.base_url, None, timeout_s=5)
    with pytest.raises(ModelError) as info:
        await run(p)
    assert info.value.kind == "authentication" and not info.value.retryable
    assert "HANGAR_ANTHROPIC_API_KEY" in info.value.message
    assert fake.requests == []
    await p.aclose()


async def test_cancel_closes_the_upstream_stream(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.enqueue_stall()
    task = asyncio.create_task(run(provider))
    while not fake.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the stream is open and waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 3
    while fake.disconnects == 0:
        assert time.monotonic() < deadline, "the upstream stream was not closed"
        await asyncio.sleep(0.01)


async def test_deprecated_model_ids_do_not_warn(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    # pytest turns warnings into errors: the SDK's deprecation warning must not escape.
    _, response = await run(provider, request(model="claude-sonnet-4-5"))
    assert response.usage == Usage(input_tokens=10, output_tokens=response.usage.output_tokens)


async def test_default_reply_when_queue_is_empty(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    deltas, response = await run(provider)
    assert "".join(d.text for d in deltas) == DEFAULT_TEXT
    assert response.content == [{"type": "text", "text": DEFAULT_TEXT}]


def test_fake_satisfies_the_official_client(fake: FakeAnthropic) -> None:
    fake.reset()
    fake.enqueue_tool_use("bash", {"command": "ls"}, text="Checking.")
    fake.enqueue_text("plain json reply")
    with anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0) as client:
        with client.messages.stream(model="claude-opus-4-6", max_tokens=100, messages=[]) as stream:
            events = [event.type for event in stream]
            message = stream.get_final_message()
        message = strict(Message, message)
        assert message.stop_reason == "tool_use"
        assert message.content[1].input == {"command": "ls"}
        assert events[:2] == ["message_start", "content_block_start"]
        assert events[-2:] == ["message_delta", "message_stop"]
        created = strict(Message, client.messages.create(model="claude-opus-4-6", max_tokens=10, messages=[]))
        assert created.content[0].text == "plain json reply"
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("x")
