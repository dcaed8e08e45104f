"""A fake chat-completions API (OpenAI-compatible): a real HTTP server for tests.

::

    with FakeOpenAI() as fake:
        fake.enqueue_text("Hi there")
        fake.enqueue_tool_calls(("bash", {"command": "ls"}), ("read", {"path": "a.txt"}))
        fake.enqueue_error(429, retry_after=2)
        provider = OpenAICompatProvider(fake.base_url, "sk-test", timeout_s=10)
        ...
        assert fake.requests[0].body["model"] == "local-llama"

:attr:`FakeOpenAI.base_url` ends in ``/v1``, like the servers it stands for. Replies are served
in order, one per ``POST /v1/chat/completions``; with the queue empty the fake answers
:data:`DEFAULT_TEXT`. Streaming requests (``"stream": true``) get ``chat.completion.chunk``
server-sent events the way OpenAI sends them: a first chunk with the role, text in several
``delta.content`` chunks, each tool call as a chunk with its id and name followed by chunks of
argument fragments, a chunk with the ``finish_reason``, a usage chunk with empty ``choices``
(when the request asks with ``stream_options.include_usage``), then ``data: [DONE]``. Other
requests get one ``chat.completion`` JSON. Errors use OpenAI's envelope
``{"error": {message, type, param, code}}``. Every request is recorded in
:attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hangar.testing._fake_server import FakeServer, RecordedRequest, split_text

__all__ = ["DEFAULT_TEXT", "FakeOpenAI", "FakeReply", "FakeToolCall", "RecordedRequest"]

DEFAULT_TEXT = "Hello from the fake chat-completions API."
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: dict[str, Any] | str
    """An object (JSON-encoded on the wire) or the raw argument string (e.g. broken JSON)."""
    id: str | None = None

    @property
    def raw_arguments(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class FakeReply:
    """One scripted upstream answer. Build with the ``FakeReply.*`` constructors."""

    text: str | None = None
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    """Default: ``tool_calls`` when there are tool calls, else ``stop``."""
    prompt_tokens: int = 10
    completion_tokens: int | None = None
    """Default: whitespace words of the text and the arguments."""
    cached_tokens: int | None = None
    """Sent as ``usage.prompt_tokens_details.cached_tokens`` when set."""
    send_usage: bool = True
    """Send the usage chunk when the request asks for it (``False``: never)."""
    status: int = 200
    error: Any = None
    """For ``status >= 400``: the response body (OpenAI envelope by default)."""
    headers: dict[str, str] = field(default_factory=dict)
    stream_error: dict[str, Any] | None = None
    """An ``{"error": ...}`` chunk sent after the first text chunk (a mid-stream failure)."""
    stall: bool = False
    """Send the first chunk and then nothing until the client goes away."""
    truncate: bool = False
    """End the stream before the ``finish_reason`` chunk."""
    interleave: bool = False
    """Interleave the argument fragments of parallel tool calls (round robin)."""
    ignore_stream: bool = False
    """Answer one ``chat.completion`` JSON even to a streaming request (as some servers do)."""
    chunk_chars: int = 8
    delay_s: float = 0.0
    """Pause between chunks."""

    @classmethod
    def of_text(cls, text: str, **kw: Any) -> FakeReply:
        return cls(text=text, **kw)

    @classmethod
    def of_tool_calls(
        cls, *calls: FakeToolCall | tuple[str, dict[str, Any] | str], text: str | None = None, **kw: Any
    ) -> FakeReply:
        built = [c if isinstance(c, FakeToolCall) else FakeToolCall(c[0], c[1]) for c in calls]
        return cls(text=text, tool_calls=built, **kw)

    @classmethod
    def failure(
        cls,
        status: int,
        message: str | None = None,
        *,
        body: Any = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeReply:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = f"{retry_after:g}"
        if body is None:
            kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
            body = {
                "error": {
                    "message": message or kind.replace("_", " "),
                    "type": kind,
                    "param": None,
                    "code": None,
                }
            }
        return cls(status=status, error=body, headers=extra)


class FakeOpenAI(FakeServer[FakeReply]):
    """The fake chat-completions API, run by uvicorn in a background thread on a free loopback port."""

    _thread_name = "fake-openai"
    _url_suffix = "/v1"

    def __init__(self) -> None:
        super().__init__([Route("/v1/chat/completions", self._completions, methods=["POST"])])

    # -- scripting

    def enqueue_text(self, text: str, **kw: Any) -> None:
        self.enqueue(FakeReply.of_text(text, **kw))

    def enqueue_tool_calls(
        self, *calls: FakeToolCall | tuple[str, dict[str, Any] | str], text: str | None = None, **kw: Any
    ) -> None:
        self.enqueue(FakeReply.of_tool_calls(*calls, text=text, **kw))

    def enqueue_error(self, status: int, message: str | None = None, **kw: Any) -> None:
        self.enqueue(FakeReply.failure(status, message, **kw))

    def enqueue_stall(self) -> None:
        self.enqueue(FakeReply(text="never", stall=True))

    # -- HTTP

    def _default_reply(self) -> FakeReply:
        return FakeReply.of_text(DEFAULT_TEXT)

    async def _not_found(self, request: Request) -> Response:
        body = {"error": {"message": "Not found", "type": "not_found_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=404)

    async def _completions(self, request: Request) -> Response:
        body, reply, n = await self._take(request)
        if reply.status >= 400:
            return JSONResponse(reply.error, status_code=reply.status, headers=reply.headers)
        completion = _Completion(reply, f"chatcmpl-fake{n:06d}", str(body.get("model", "fake-model")), n)
        if not body.get("stream") or reply.ignore_stream:
            return JSONResponse(completion.whole(), headers=reply.headers)
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and reply.send_usage
        return StreamingResponse(
            self._stream(reply, _frames(completion.chunks(include_usage)), request),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **reply.headers},
        )


def _frames(chunks: Iterable[dict[str, Any] | str | None]) -> Iterator[bytes | None]:
    """``data:`` server-sent events; ``None`` (the stall / truncate marker) passes through."""
    for chunk in chunks:
        if chunk is None:
            yield None
            continue
        data = chunk if isinstance(chunk, str) else json.dumps(chunk, separators=(",", ":"))
        yield f"data: {data}\n\n".encode()


class _Completion:
    """One reply rendered as a ``chat.completion`` or as ``chat.completion.chunk`` events."""

    def __init__(self, reply: FakeReply, completion_id: str, model: str, n: int) -> None:
        self.reply = reply
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self.call_ids = [c.id or f"call_fake{n:04d}_{i}" for i, c in enumerate(reply.tool_calls)]
        self.finish_reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def usage(self) -> dict[str, Any]:
        reply = self.reply
        completion = reply.completion_tokens
        if completion is None:
            words = (reply.text or "").split() + [
                w for c in reply.tool_calls for w in c.raw_arguments.split()
            ]
            completion = max(1, len(words))
        usage: dict[str, Any] = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
        }
        if reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
        return usage

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.text}
        if self.reply.tool_calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
                for cid, c in zip(self.call_ids, self.reply.tool_calls, strict=True)
            ]
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            ],
        }
        if self.reply.send_usage:
            out["usage"] = self.usage()
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, *, usage: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            chunk["usage"] = None
        return chunk

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any] | str | None]:
        reply = self.reply
        yield self._chunk({"role": "assistant", "content": ""}, usage=include_usage)
        if reply.stall:
            yield None
            return
        for i, piece in enumerate(split_text(reply.text or "", reply.chunk_chars)):
            yield self._chunk({"content": piece}, usage=include_usage)
            if i == 0 and reply.stream_error is not None:
                yield {"error": reply.stream_error}
                return
        if reply.stream_error is not None and not reply.text:
            yield {"error": reply.stream_error}
            return
        for fragment in self._tool_fragments():
            yield self._chunk({"tool_calls": [fragment]}, usage=include_usage)
        if reply.truncate:
            yield None
            return
        yield self._chunk({}, self.finish_reason, usage=include_usage)
        if include_usage:
            yield {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(),
            }
        yield "[DONE]"

    def _tool_fragments(self) -> Iterator[dict[str, Any]]:
        per_call: list[list[dict[str, Any]]] = []
        for index, (cid, call) in enumerate(zip(self.call_ids, self.reply.tool_calls, strict=True)):
            head = {
                "index": index,
                "id": cid,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            pieces = [
                {"index": index, "function": {"arguments": p}}
                for p in split_text(call.raw_arguments, self.reply.chunk_chars)
            ]
            per_call.append([head, *pieces])
        if not self.reply.interleave:
            for fragments in per_call:
                yield from fragments
            return
        for group in itertools.zip_longest(*per_call):
            yield from (f for f in group if f is not None)
