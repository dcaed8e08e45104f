"""The anthropic provider against a real (fake) Messages API server, through the official SDK."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from hangar.runtime.models import AnthropicProvider, ModelError, ModelRequest, ModelResponse, TextDelta, Usage
from hangar.testing import free_port
from hangar.testing.fake_anthropic import DEFAULT_TEXT, FakeAnthropic, FakeReply
from tests.fakes import (
    assert_one_request_without_key,
    cancel_once_streaming,
    model_request,
    one_shot_error,
    provider_fixtures,
    run_stream,
    shared_failure_cases,
    stream_error,
)
from tests.helpers import strict

KEY = "sk-ant-upstream-SECRET-" + "z" * 24
TOOLS = [
    {"name": "bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {}}}
]


fake, provider = provider_fixtures(FakeAnthropic, lambda f: AnthropicProvider(f.base_url, KEY, timeout_s=10))


def request(**kw: Any) -> ModelRequest:
    return model_request("claude-sonnet-4-6", **kw)


async def run(p: AnthropicProvider, req: ModelRequest | None = None) -> tuple[list[TextDelta], ModelResponse]:
    return await run_stream(p, req or request(), thinks=True)


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
        *shared_failure_cases(FakeReply.failure),
        (FakeReply.failure(503, error_type="api_error"), "request_failed", 503, True, None),
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
    err = await stream_error(provider, request())
    assert (err.kind, err.status, err.retryable, err.retry_after_s) == (kind, status, retryable, retry_after)
    assert_one_request_without_key(fake, err, KEY, "the SDK must not retry on its own")


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
    err = await one_shot_error(AnthropicProvider(fake.base_url, KEY, timeout_s=0.3), request())
    assert (err.kind, err.retryable) == ("timeout", True)
    assert len(fake.requests) == 1


async def test_connection_refused() -> None:
    err = await one_shot_error(
        AnthropicProvider(f"http://127.0.0.1:{free_port()}", KEY, timeout_s=5), request()
    )
    assert (err.kind, err.retryable, err.status) == ("request_failed", True, None)
    assert KEY not in str(err)


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
    await cancel_once_streaming(fake, run(provider))


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
