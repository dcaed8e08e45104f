"""The scripted provider: default replies, every directive, script files, determinism."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from hangar.runtime.models import (
    ModelError,
    ModelRequest,
    ModelResponse,
    ScriptedProvider,
    TextDelta,
    ThinkingStart,
    Usage,
)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def req(text: str | list[dict[str, Any]], *, model: str = "scripted", **kw: Any) -> ModelRequest:
    return ModelRequest(model=model, system=kw.pop("system", None), messages=[user(text)], tools=[], **kw)


async def run(provider: ScriptedProvider, request: ModelRequest) -> tuple[list[TextDelta], ModelResponse]:
    items = [item async for item in provider.stream(request)]
    assert isinstance(items[-1], ModelResponse), "the last item must be the response"
    starts = [i for i in items if isinstance(i, ThinkingStart)]
    has_thinking = any(b["type"] == "thinking" for b in items[-1].content)
    assert len(starts) == (1 if has_thinking else 0), "one ThinkingStart per thinking block"
    if starts:
        assert isinstance(items[0], ThinkingStart), "thinking starts before the text"
    deltas = [i for i in items[:-1] if not isinstance(i, ThinkingStart)]
    assert all(isinstance(d, TextDelta) for d in deltas)
    return deltas, items[-1]  # type: ignore[return-value]


def text_of(response: ModelResponse) -> str:
    return "".join(b["text"] for b in response.content if b["type"] == "text")


def assert_deltas_match(deltas: list[TextDelta], response: ModelResponse) -> None:
    texts = [b["text"] for b in response.content if b["type"] == "text"]
    for index, text in enumerate(texts):
        assert "".join(d.text for d in deltas if d.index == index) == text
    assert {d.index for d in deltas} <= set(range(len(texts)))


async def test_default_reply_streams_in_a_few_deltas() -> None:
    deltas, response = await run(ScriptedProvider(), req("one two three four five six seven eight"))
    assert text_of(response) == "Hello! You said: one two three four five six seven eight"
    assert 1 < len(deltas) <= 4
    assert_deltas_match(deltas, response)
    assert response.stop_reason == "end_turn"
    assert response.usage == Usage(input_tokens=8, output_tokens=11)


async def test_default_reply_without_text_and_block_content() -> None:
    _, response = await run(ScriptedProvider(), req([{"type": "text", "text": "  "}]))
    assert text_of(response) == "Hello!"
    _, response = await run(
        ScriptedProvider(), req([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    )
    assert text_of(response) == "Hello! You said: a\nb"


async def test_echo_model_replies_verbatim() -> None:
    _, response = await run(ScriptedProvider(), req("exactly this", model="scripted-echo"))
    assert response.content == [{"type": "text", "text": "exactly this"}]


async def test_usage_counts_system_history_and_tools() -> None:
    request = ModelRequest(
        model="scripted",
        system="be brief",
        messages=[
            user("first question here"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {"a": 1}}],
            },
            user(
                [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "result words"},
                    {"type": "text", "text": "go"},
                ]
            ),
        ],
    )
    _, response = await run(ScriptedProvider(), request)
    # 2 (system) + 3 + 2 (json '{"a": 1}') + 2 + 1
    assert response.usage.input_tokens == 10
    assert response.usage.output_tokens == len(text_of(response).split())


async def test_deterministic() -> None:
    provider = ScriptedProvider()
    request = req('hi [[tool:bash {"command": "ls"}]]')
    assert await run(provider, request) == await run(ScriptedProvider(), request)


@pytest.mark.parametrize(
    ("kind", "status", "retryable"),
    [
        ("overloaded", 529, True),
        ("rate_limited", 429, True),
        ("request_failed", 500, True),
        ("timeout", None, True),
        ("authentication", 401, False),
        ("invalid_request", 400, False),
    ],
)
async def test_error_directive(kind: str, status: int | None, retryable: bool) -> None:
    with pytest.raises(ModelError) as info:
        await run(ScriptedProvider(), req(f"hello [[error:{kind}]]"))
    assert info.value.kind == kind
    assert info.value.status == status
    assert info.value.retryable is retryable
    assert info.value.retry_after_s is None


async def test_error_directive_retry_after_and_times() -> None:
    provider = ScriptedProvider()
    request = req("hi [[error:rate_limited times=2 retry_after=1.5]]")
    for _ in range(2):
        with pytest.raises(ModelError) as info:
            await run(provider, request)
        assert info.value.retry_after_s == 1.5
    _, response = await run(provider, request)  # third attempt succeeds
    assert text_of(response) == "Hello! You said: hi"
    # a different conversation has its own count
    with pytest.raises(ModelError):
        await run(provider, req("other [[error:rate_limited times=2 retry_after=1.5]]"))


async def test_error_directive_partial_streams_then_fails() -> None:
    seen: list[Any] = []
    with pytest.raises(ModelError) as info:
        async for item in ScriptedProvider().stream(
            req("one two three four five [[error:overloaded partial]]")
        ):
            seen.append(item)
    assert info.value.kind == "overloaded"
    assert len(seen) == 1 and isinstance(seen[0], TextDelta)


async def test_tool_directive() -> None:
    deltas, response = await run(ScriptedProvider(), req('[[tool:bash {"command":"echo hi"}]]'))
    assert deltas == []
    assert response.stop_reason == "tool_use"
    [block] = response.content
    assert block["type"] == "tool_use" and block["name"] == "bash"
    assert block["input"] == {"command": "echo hi"}
    assert block["id"].startswith("toolu_")


async def test_parallel_tools_without_input_and_brackets_in_json() -> None:
    text = '[[tool:read]] and [[tool:bash {"command": "[[ -f x ]] && echo ok"}]]'
    _, response = await run(ScriptedProvider(), req(text))
    assert [(b["name"], b["input"]) for b in response.content] == [
        ("read", {}),
        ("bash", {"command": "[[ -f x ]] && echo ok"}),
    ]
    assert len({b["id"] for b in response.content}) == 2


async def test_tool_result_is_summarised() -> None:
    provider = ScriptedProvider()
    first = req('[[tool:bash {"command":"echo hi"}]]')
    _, response = await run(provider, first)
    tool_id = response.content[0]["id"]
    follow_up = ModelRequest(
        model="scripted",
        system=None,
        messages=[
            *first.messages,
            {"role": "assistant", "content": response.content},
            user(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool_id,
                        "content": [{"type": "text", "text": "hi\n"}],
                    }
                ]
            ),
        ],
        tools=[],
    )
    _, summary = await run(provider, follow_up)
    assert summary.stop_reason == "end_turn"
    assert text_of(summary) == "The bash tool returned: hi"
    failed = ModelRequest(
        model="scripted",
        system=None,
        messages=[
            *follow_up.messages[:2],
            user([{"type": "tool_result", "tool_use_id": tool_id, "content": "boom", "is_error": True}]),
        ],
    )
    _, summary = await run(provider, failed)
    assert text_of(summary) == "The bash tool failed: boom"


async def test_sleep_directive_waits_and_is_cancellable() -> None:
    provider = ScriptedProvider()
    started = time.monotonic()
    await run(provider, req("[[sleep:150]] hi"))
    assert time.monotonic() - started >= 0.14

    task = asyncio.create_task(run(provider, req("[[sleep:60000]] hi")))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1


async def test_latency_applies_to_every_request() -> None:
    provider = ScriptedProvider(latency_ms=100)
    started = time.monotonic()
    await run(provider, req("hi"))
    assert time.monotonic() - started >= 0.09


async def test_refusal_directive() -> None:
    _, response = await run(ScriptedProvider(), req("do the bad thing [[refusal]]"))
    assert response.stop_reason == "refusal"
    assert text_of(response) == "I can't help with that."


async def test_words_directive_streams_word_by_word() -> None:
    deltas, response = await run(ScriptedProvider(), req("[[words:25]]"))
    assert len(deltas) == 25
    assert len(text_of(response).split()) == 25
    assert response.usage.output_tokens == 25
    assert_deltas_match(deltas, response)


async def test_max_tokens_cuts_the_reply() -> None:
    deltas, response = await run(ScriptedProvider(), req("[[words:50]]", max_tokens=10))
    assert response.stop_reason == "max_tokens"
    assert len(text_of(response).split()) == 10
    assert_deltas_match(deltas, response)


async def test_thinking_directive() -> None:
    deltas, response = await run(ScriptedProvider(), req("ponder this [[thinking]]"))
    assert [b["type"] for b in response.content] == ["thinking", "text"]
    assert response.content[0]["thinking"] == "Considering: ponder this"
    assert {d.index for d in deltas} == {0}  # text block indices count text blocks only
    assert_deltas_match(deltas, response)


async def test_unknown_or_malformed_directives_stay_text() -> None:
    _, response = await run(ScriptedProvider(), req("a [[nope]] b [[error:bogus]] [[tool:x {bad]]"))
    assert text_of(response) == "Hello! You said: a [[nope]] b [[error:bogus]] [[tool:x {bad]]"


async def test_last_message_from_assistant_gets_plain_greeting() -> None:
    request = ModelRequest(
        "scripted", None, [user("[[refusal]]"), {"role": "assistant", "content": "Sure"}], []
    )
    _, response = await run(ScriptedProvider(), request)
    assert text_of(response) == "Hello!"


def write_script(tmp_path: Path, turns: Any) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns))
    return path


async def test_script_turns_in_order_then_default(tmp_path: Path) -> None:
    path = write_script(
        tmp_path,
        [
            {"text": "first"},
            {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "ls"}}]},
            {"error": {"kind": "overloaded", "message": "busy", "retry_after_s": 2}},
        ],
    )
    provider = ScriptedProvider(script=path)
    deltas, response = await run(provider, req("x"))
    assert text_of(response) == "first" and "".join(d.text for d in deltas) == "first"
    _, response = await run(provider, req("x"))
    assert response.stop_reason == "tool_use" and response.content[0]["input"] == {"command": "ls"}
    with pytest.raises(ModelError) as info:
        await run(provider, req("x"))
    assert (info.value.kind, info.value.message, info.value.retry_after_s, info.value.status) == (
        "overloaded",
        "busy",
        2,
        529,
    )
    _, response = await run(provider, req("x"))
    assert text_of(response) == "Hello! You said: x"


async def test_script_when_and_repeat(tmp_path: Path) -> None:
    path = write_script(
        tmp_path,
        [
            {
                "when": "weather",
                "text": "sunny",
                "repeat": True,
                "usage": {"input_tokens": 7, "output_tokens": 1},
            },
            {"text": "once", "stop_reason": "stop_sequence"},
        ],
    )
    provider = ScriptedProvider(script=path)
    for _ in range(2):
        _, response = await run(provider, req("what's the weather?"))
        assert text_of(response) == "sunny"
        assert response.usage == Usage(input_tokens=7, output_tokens=1)
    _, response = await run(provider, req("hello"))
    assert (text_of(response), response.stop_reason) == ("once", "stop_sequence")
    _, response = await run(provider, req("hello"))
    assert text_of(response) == "Hello! You said: hello"


@pytest.mark.parametrize("turns", [{"not": "a list"}, [{"bogus": 1}], [{"when": "("}], [{"error": "nope"}]])
def test_bad_script_is_a_clear_error(tmp_path: Path, turns: Any) -> None:
    with pytest.raises(ValueError, match="invalid scripted-provider script"):
        ScriptedProvider(script=write_script(tmp_path, turns))
