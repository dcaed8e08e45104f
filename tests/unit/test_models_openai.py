"""The openai (chat-completions) provider against a real (fake) OpenAI-compatible server."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
import pytest

from hangar.config import Settings
from hangar.runtime.models import ModelError, ModelRequest, ModelResponse, ModelRouter, TextDelta, Usage
from hangar.runtime.models.openai_compat import OpenAICompatProvider, request_body
from hangar.testing import free_port
from hangar.testing.fake_openai import DEFAULT_TEXT, FakeOpenAI, FakeReply, FakeToolCall
from tests.fakes import (
    assert_one_request_without_key,
    cancel_once_streaming,
    model_request,
    one_shot_error,
    provider_fixtures,
    run_stream,
    shared_failure_cases,
    stream_error,
    wait_for_disconnect,
)

KEY = "sk-openai-upstream-SECRET-" + "q" * 24
TOOLS = [
    {
        "name": "bash",
        "description": "Run a command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    },
    {"name": "read", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
]


fake, provider = provider_fixtures(FakeOpenAI, lambda f: OpenAICompatProvider(f.base_url, KEY, timeout_s=10))


def request(**kw: Any) -> ModelRequest:
    return model_request("local-llama", **kw)


async def run(
    p: OpenAICompatProvider, req: ModelRequest | None = None
) -> tuple[list[TextDelta], ModelResponse]:
    return await run_stream(p, req or request(), thinks=False)


# --------------------------------------------------------------------------- responses


async def test_streams_text_with_deltas_and_usage(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    text = "Hello there, this is a streamed reply."
    fake.enqueue(FakeReply.of_text(text, prompt_tokens=17, completion_tokens=9, chunk_chars=5))
    deltas, response = await run(provider, request(max_tokens=321, effort="high"))
    assert len(deltas) == len(range(0, len(text), 5))
    assert "".join(d.text for d in deltas) == text
    assert {d.index for d in deltas} == {0}
    assert response.content == [{"type": "text", "text": text}]
    assert response.stop_reason == "end_turn"
    assert response.usage == Usage(input_tokens=17, output_tokens=9)

    [sent] = fake.requests
    assert sent.method == "POST" and sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "local-llama",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
        ],
        "max_tokens": 321,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_deltas_arrive_while_the_stream_is_open(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    fake.enqueue(FakeReply.of_text("one two three four", chunk_chars=4, delay_s=0.15))
    started = time.monotonic()
    first_at = None
    async for item in provider.stream(request()):
        if isinstance(item, TextDelta) and first_at is None:
            first_at = time.monotonic() - started
    total = time.monotonic() - started
    assert first_at is not None and first_at < total - 0.3, (first_at, total)


async def test_parallel_tool_calls_with_fragmented_arguments(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    bash_input = {"command": "find . -name '*.py' | head", "timeout": 30, "nested": {"a": [1, 2, 3]}}
    read_input = {"path": 'src/ünïcode "quoted".txt'}
    fake.enqueue(
        FakeReply.of_tool_calls(
            FakeToolCall("bash", bash_input, id="call_bash"),
            FakeToolCall("read", read_input, id="call_read"),
            text="Let me check.",
            chunk_chars=3,
            interleave=True,
            prompt_tokens=50,
            cached_tokens=20,
        )
    )
    deltas, response = await run(provider, request(tools=TOOLS))
    assert "".join(d.text for d in deltas) == "Let me check."
    assert response.stop_reason == "tool_use"
    assert response.content == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_bash", "name": "bash", "input": bash_input},
        {"type": "tool_use", "id": "call_read", "name": "read", "input": read_input},
    ]
    assert response.usage.input_tokens == 30 and response.usage.cache_read_input_tokens == 20
    assert fake.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a command",
                "parameters": TOOLS[0]["input_schema"],
            },
        },
        {"type": "function", "function": {"name": "read", "parameters": TOOLS[1]["input_schema"]}},
    ]


async def test_sequential_tool_calls_without_text_and_generated_ids(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    fake.enqueue(FakeReply.of_tool_calls(("bash", {"command": "ls"}), ("read", {}), chunk_chars=2))
    deltas, response = await run(provider, request(tools=TOOLS))
    assert deltas == []
    assert [b["type"] for b in response.content] == ["tool_use", "tool_use"]
    assert [b["input"] for b in response.content] == [{"command": "ls"}, {}]
    ids = [b["id"] for b in response.content]
    assert all(ids) and len(set(ids)) == 2


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
    ],
)
async def test_finish_reason_mapping(
    provider: OpenAICompatProvider, fake: FakeOpenAI, finish: str, stop: str
) -> None:
    fake.enqueue(FakeReply.of_text("x", finish_reason=finish))
    _, response = await run(provider)
    assert response.stop_reason == stop


async def test_stop_after_tool_calls_is_tool_use(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    fake.enqueue(FakeReply.of_tool_calls(("bash", {"command": "ls"}), finish_reason="stop"))
    _, response = await run(provider)
    assert response.stop_reason == "tool_use"


async def test_missing_usage_is_zero(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    fake.enqueue(FakeReply.of_text("no usage here", send_usage=False))
    _, response = await run(provider)
    assert response.usage == Usage()


@pytest.mark.parametrize("arguments", ['{"command": "ls"', '["not", "an", "object"]'])
async def test_unparsable_tool_arguments_fail_the_request(
    provider: OpenAICompatProvider, fake: FakeOpenAI, arguments: str
) -> None:
    fake.enqueue(FakeReply.of_tool_calls(("bash", arguments)))
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert (info.value.kind, info.value.retryable) == ("request_failed", True)
    assert "tool call 0 (bash)" in info.value.message
    assert len(fake.requests) == 1


async def test_stream_ending_before_finish_reason(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    fake.enqueue(FakeReply.of_text("cut short", truncate=True))
    with pytest.raises(ModelError) as info:
        await run(provider)
    assert (info.value.kind, info.value.retryable) == ("request_failed", True)
    assert "finish_reason" in info.value.message


async def test_mid_stream_error_chunk(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    fake.enqueue(
        FakeReply.of_text("partial answer", stream_error={"message": "engine overloaded", "code": 503})
    )
    items: list[Any] = []
    with pytest.raises(ModelError) as info:
        async for item in provider.stream(request()):
            items.append(item)
    assert (info.value.kind, info.value.status) == ("overloaded", 503)
    assert "engine overloaded" in info.value.message
    assert items and all(isinstance(i, TextDelta) for i in items)
    assert len(fake.requests) == 1


async def test_non_streamed_json_answer_is_understood(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    fake.enqueue(FakeReply.of_tool_calls(("bash", {"command": "pwd"}), text="Sure.", ignore_stream=True))
    deltas, response = await run(provider)
    assert [d.text for d in deltas] == ["Sure."]
    assert response.stop_reason == "tool_use"
    assert response.content[1]["name"] == "bash" and response.content[1]["input"] == {"command": "pwd"}
    assert response.usage.input_tokens == 10


async def test_fake_answers_plain_json_to_non_streaming_requests(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.enqueue_text("plain")
    async with httpx.AsyncClient() as http:
        whole = (await http.post(f"{fake.base_url}/chat/completions", json={"model": "m"})).json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "plain"}
    assert whole["choices"][0]["finish_reason"] == "stop"


async def test_default_reply_when_queue_is_empty(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    deltas, response = await run(provider)
    assert "".join(d.text for d in deltas) == DEFAULT_TEXT
    assert response.content == [{"type": "text", "text": DEFAULT_TEXT}]


# --------------------------------------------------------------------------- request translation


async def test_multi_turn_history_with_tools_is_translated(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look at this"}, image]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_1", "name": "bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "call_2", "name": "read", "input": {"path": "a.txt"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt\nb.txt"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "permission denied"}],
                },
                {"type": "text", "text": "and then?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_3", "name": "bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_3", "content": "done"}]},
    ]
    await run(provider, request(model="local-llama", messages=messages, tools=TOOLS))
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"command": "ls"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.txt"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: permission denied"},
        {"role": "user", "content": "and then?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": "done"},
    ]


def test_translation_details() -> None:
    shot = {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}}
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}}
    pdf = {"type": "document", "title": "Spec", "source": {"type": "base64", "media_type": "application/pdf"}}
    body = request_body(
        ModelRequest(
            model="local-llama",
            system=None,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, doc, pdf]},
                {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "c"}, shot],
                        }
                    ],
                },
            ],
        ),
        {"local-llama": "meta-llama/Llama-3.1-8B-Instruct"},
    )
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "tools" not in body and "reasoning_effort" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": "a\n\ndoc text\n\n[document 'Spec' omitted: not supported by this model]",
        },
        {"role": "assistant", "content": "b"},
        {"role": "tool", "tool_call_id": "t1", "content": "c"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}],
        },
    ]


async def test_model_map_and_no_key(fake: FakeOpenAI) -> None:
    fake.reset()
    p = OpenAICompatProvider(fake.base_url + "/", None, timeout_s=5, model_map={"local-llama": "llama3.1:8b"})
    try:
        await run(p)
    finally:
        await p.aclose()
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "llama3.1:8b"
    assert "authorization" not in sent.headers


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("reply", "kind", "status", "retryable", "retry_after"),
    [
        *shared_failure_cases(FakeReply.failure),
        (FakeReply.failure(503), "overloaded", 503, True, None),
        (FakeReply.failure(502, body="<html>bad gateway</html>"), "request_failed", 502, True, None),
        (
            FakeReply.failure(404, body={"error": "model 'nope' not found"}),
            "invalid_request",
            404,
            False,
            None,
        ),
        (FakeReply.failure(422, body={"detail": [{"msg": "bad"}]}), "invalid_request", 422, False, None),
    ],
)
async def test_error_mapping_with_exactly_one_request(
    provider: OpenAICompatProvider,
    fake: FakeOpenAI,
    reply: FakeReply,
    kind: str,
    status: int,
    retryable: bool,
    retry_after: float | None,
) -> None:
    fake.enqueue(reply)
    err = await stream_error(provider, request())
    assert (err.kind, err.status, err.retryable, err.retry_after_s) == (kind, status, retryable, retry_after)
    assert err.message.startswith(f"Upstream model API error {status} ({kind})")
    assert_one_request_without_key(fake, err, KEY, "no silent retries")


async def test_upstream_messages_are_kept_but_the_key_is_redacted(
    provider: OpenAICompatProvider, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.enqueue_error(401, f"Incorrect API key provided: {KEY}")
    fake.enqueue(FakeReply.of_text("x", stream_error={"message": f"bad key {KEY}", "code": 401}))
    fake.enqueue_error(404, body={"error": "model 'nope' not found"})
    messages = []
    for _ in range(3):
        with pytest.raises(ModelError) as info:
            await run(provider)
        messages.append(info.value.message)
        assert KEY not in repr(info.value)
    assert messages == [
        "Upstream model API error 401 (authentication): Incorrect API key provided: [redacted]",
        "Upstream model API error in the stream 401 (authentication): bad key [redacted]",
        "Upstream model API error 404 (invalid_request): model 'nope' not found",
    ]
    assert KEY not in repr(provider)
    assert KEY not in caplog.text
    assert len(fake.requests) == 3


async def test_timeout_with_one_request(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.enqueue_stall()
    err = await one_shot_error(OpenAICompatProvider(fake.base_url, KEY, timeout_s=0.3), request())
    assert (err.kind, err.retryable, err.status) == ("timeout", True, None)
    assert len(fake.requests) == 1


async def test_connection_refused() -> None:
    err = await one_shot_error(
        OpenAICompatProvider(f"http://127.0.0.1:{free_port()}/v1", KEY, timeout_s=5), request()
    )
    assert (err.kind, err.retryable, err.status) == ("request_failed", True, None)
    assert KEY not in str(err)


@pytest.mark.parametrize(
    "base_url", [None, "localhost:11434/v1"], ids=["missing_base_url", "base_url_without_scheme"]
)
async def test_unusable_base_url_is_a_clear_error(base_url: str | None) -> None:
    err = await one_shot_error(OpenAICompatProvider(base_url, None, timeout_s=5), request())
    assert (err.kind, err.retryable) == ("invalid_request", False)
    assert "HANGAR_OPENAI_BASE_URL" in err.message


# --------------------------------------------------------------------------- cancellation


async def test_cancel_closes_the_upstream_stream(provider: OpenAICompatProvider, fake: FakeOpenAI) -> None:
    fake.enqueue_stall()
    await cancel_once_streaming(fake, run(provider))
    assert fake.completed == 0


async def test_closing_the_generator_early_closes_the_stream(
    provider: OpenAICompatProvider, fake: FakeOpenAI
) -> None:
    fake.enqueue(FakeReply.of_text("word " * 200, chunk_chars=5, delay_s=0.02))
    stream = cast(AsyncGenerator[TextDelta | ModelResponse, None], provider.stream(request()))
    async with contextlib.aclosing(stream) as events:
        async for item in events:
            assert isinstance(item, TextDelta)
            break
    await wait_for_disconnect(fake)


# --------------------------------------------------------------------------- router


async def test_router_picks_the_openai_provider_by_route(fake: FakeOpenAI) -> None:
    fake.reset()
    settings = Settings(
        model_routes={"local-*": "openai", "claude-*": "anthropic"},
        openai_base_url=fake.base_url,
        openai_api_key=KEY,
        openai_model_map={"local-qwen": "qwen2.5:7b"},
    )
    router = ModelRouter(settings)
    try:
        assert router.provider_name_for("local-qwen") == "openai"
        assert router.provider_name_for("claude-opus-4-6") == "anthropic"
        provider = router.provider_for("local-qwen")
        assert isinstance(provider, OpenAICompatProvider)
        assert router.provider_for("local-llama") is provider
        items = [i async for i in provider.stream(request(model="local-qwen"))]
        assert isinstance(items[-1], ModelResponse)
    finally:
        await router.aclose()
    [sent] = fake.requests
    assert sent.body["model"] == "qwen2.5:7b"
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_openai_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGAR_MODEL_ROUTES", '{"local-*": "openai", "claude-*": "anthropic"}')
    monkeypatch.setenv("HANGAR_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HANGAR_OPENAI_MODEL_MAP", '{"local-llama": "llama3.1:8b"}')
    monkeypatch.setenv("HANGAR_OPENAI_TIMEOUT_S", "12.5")
    settings = Settings()
    assert settings.model_routes == {"local-*": "openai", "claude-*": "anthropic"}
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)
    assert settings.openai_model_map == {"local-llama": "llama3.1:8b"}
    assert settings.openai_timeout_s == 12.5
    assert ModelRouter(settings).provider_name_for("local-llama") == "openai"
