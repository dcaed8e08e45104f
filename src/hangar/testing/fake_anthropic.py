"""A fake Messages API: a real HTTP server speaking the upstream wire format, for tests.

::

    with FakeAnthropic() as fake:
        fake.enqueue_text("Hi there")
        fake.enqueue_tool_use("bash", {"command": "ls"})
        fake.enqueue_error(529)
        provider = AnthropicProvider(fake.base_url, "sk-test", timeout_s=10)
        ...
        assert fake.requests[0].body["model"] == "claude-sonnet-4-6"

Replies are served in order, one per ``POST /v1/messages``; with the queue empty the fake
answers :data:`DEFAULT_TEXT`. Streaming requests (``"stream": true``) get real server-sent
events (``message_start``, ``ping``, ``content_block_start``, ``content_block_delta`` with
``text_delta`` / ``input_json_delta`` / ``thinking_delta`` / ``signature_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``); the others get the ``Message``
JSON. Errors use the real envelope. Every request is recorded in :attr:`FakeAnthropic.requests`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hangar.testing._fake_server import FakeServer, RecordedRequest, split_text

__all__ = ["DEFAULT_TEXT", "ERROR_TYPES", "FakeAnthropic", "FakeReply", "RecordedRequest"]

DEFAULT_TEXT = "Hello from the fake Messages API."
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass
class FakeReply:
    """One scripted upstream answer. Build with the ``FakeReply.*`` constructors."""

    blocks: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int = 10
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    status: int = 200
    error: dict[str, Any] | None = None
    """For ``status >= 400``: the ``error`` object of the envelope."""
    headers: dict[str, str] = field(default_factory=dict)
    stream_error: dict[str, Any] | None = None
    """An ``error`` SSE event sent after the first content block starts (a mid-stream failure)."""
    stall: bool = False
    """Send ``message_start`` and then nothing until the client goes away."""
    chunk_chars: int = 8
    delay_s: float = 0.0
    """Pause between SSE events."""
    truncate: bool = False
    """Drop the connection before ``message_stop``."""

    @classmethod
    def text(cls, text: str, **kw: Any) -> FakeReply:
        return cls(blocks=[{"type": "text", "text": text}], **kw)

    @classmethod
    def tool_use(
        cls,
        name: str,
        tool_input: dict[str, Any],
        *,
        tool_id: str | None = None,
        text: str | None = None,
        **kw: Any,
    ) -> FakeReply:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        return cls(blocks=blocks, stop_reason="tool_use", **kw)

    @classmethod
    def failure(
        cls,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeReply:
        kind = error_type or ERROR_TYPES.get(status, "api_error")
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = f"{retry_after:g}"
        return cls(
            status=status,
            error={"type": kind, "message": message or _default_message(kind)},
            headers=extra,
        )


def _default_message(kind: str) -> str:
    return {"overloaded_error": "Overloaded", "rate_limit_error": "Rate limited"}.get(
        kind, kind.replace("_", " ")
    )


class FakeAnthropic(FakeServer[FakeReply]):
    """The fake Messages API, run by uvicorn in a background thread on a free loopback port."""

    _thread_name = "fake-anthropic"

    def __init__(self) -> None:
        super().__init__([Route("/v1/messages", self._messages, methods=["POST"])])

    # -- scripting

    def enqueue_text(self, text: str, **kw: Any) -> None:
        self.enqueue(FakeReply.text(text, **kw))

    def enqueue_tool_use(self, name: str, tool_input: dict[str, Any], **kw: Any) -> None:
        self.enqueue(FakeReply.tool_use(name, tool_input, **kw))

    def enqueue_error(self, status: int, message: str | None = None, **kw: Any) -> None:
        self.enqueue(FakeReply.failure(status, message, **kw))

    def enqueue_stream_error(self, error_type: str = "overloaded_error", message: str = "Overloaded") -> None:
        self.enqueue(FakeReply.text("partial answer", stream_error={"type": error_type, "message": message}))

    def enqueue_stall(self) -> None:
        self.enqueue(FakeReply(blocks=[{"type": "text", "text": "never"}], stall=True))

    # -- HTTP

    def _default_reply(self) -> FakeReply:
        return FakeReply.text(DEFAULT_TEXT)

    async def _not_found(self, request: Request) -> Response:
        return _error_response(404, {"type": "not_found_error", "message": "Not found"}, {})

    async def _messages(self, request: Request) -> Response:
        body, reply, n = await self._take(request)
        msg_id = f"msg_fake{n:06d}"
        if reply.status >= 400:
            return _error_response(reply.status, reply.error or {}, reply.headers)
        message = self._message(reply, msg_id, str(body.get("model", "claude-fake")))
        if not body.get("stream"):
            return JSONResponse(message, headers={"request-id": "req_" + msg_id, **reply.headers})
        return StreamingResponse(
            self._stream(reply, _events(reply, message), request),
            media_type="text/event-stream",
            headers={"request-id": "req_" + msg_id, "cache-control": "no-cache", **reply.headers},
        )

    def _message(self, reply: FakeReply, msg_id: str, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for i, block in enumerate(reply.blocks):
            block = dict(block)
            if block["type"] == "tool_use" and not block.get("id"):
                block["id"] = f"toolu_{msg_id[4:]}_{i}"
            if block["type"] == "thinking":
                block.setdefault("signature", "fake-signature")
            content.append(block)
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = sum(len(json.dumps(b).split()) for b in content)
        return {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": reply.cache_read_input_tokens,
                "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            },
        }


def _sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _events(reply: FakeReply, message: dict[str, Any]) -> Iterator[bytes | None]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield _sse_frame("message_start", {"type": "message_start", "message": start})
    if reply.stall:
        yield None
        return
    yield _sse_frame("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            initial: dict[str, Any] = {"type": "text", "text": ""}
        elif kind == "tool_use":
            initial = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        elif kind == "thinking":
            initial = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            initial = block
        yield _sse_frame(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": initial}
        )
        if reply.stream_error is not None:
            yield _sse_frame("error", {"type": "error", "error": reply.stream_error})
            return
        for delta in _deltas(block, reply.chunk_chars):
            yield _sse_frame(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            )
        yield _sse_frame("content_block_stop", {"type": "content_block_stop", "index": index})
    if reply.truncate:
        yield None
        return
    yield _sse_frame(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _sse_frame("message_stop", {"type": "message_stop"})


def _deltas(block: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        for piece in split_text(block["text"], size):
            yield {"type": "text_delta", "text": piece}
    elif kind == "tool_use":
        for piece in split_text(json.dumps(block["input"]), size):
            yield {"type": "input_json_delta", "partial_json": piece}
    elif kind == "thinking":
        for piece in split_text(block["thinking"], size):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}


def _error_response(status: int, error: dict[str, Any], headers: dict[str, str]) -> Response:
    rid = "req_fake_error"
    return JSONResponse(
        {"type": "error", "error": error, "request_id": rid},
        status_code=status,
        headers={"request-id": rid, **headers},
    )
