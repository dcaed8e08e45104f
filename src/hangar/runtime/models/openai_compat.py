"""The ``openai`` provider: any server speaking OpenAI's chat-completions API (vLLM, Ollama,
LiteLLM, llama.cpp, LM Studio, OpenAI itself).

It talks to ``POST {base_url}/chat/completions`` with httpx directly rather than through the
``openai`` package: the wire format is small, and we need precise control of retries (none:
exactly one HTTP request per call, the loop decides about retrying) and of cancellation
(cancelling the consuming task closes the HTTP stream at once).

Translation of a :class:`ModelRequest` (Messages-API shaped):

- ``system`` → a first ``system`` message; ``tools`` ``{name, description, input_schema}`` →
  ``{type: "function", function: {name, description, parameters}}``; ``model`` through
  ``model_map`` (unmapped ids are sent as they are); ``max_tokens`` as is; ``effort`` is not sent
  (there is no portable equivalent).
- user ``text`` blocks → the message's text (a plain string unless an image is present);
  ``image`` blocks (base64 or url sources) → ``image_url`` parts with a ``data:`` URL;
  ``document`` blocks with a text source → text, other documents → a placeholder text.
- ``tool_result`` blocks → one ``tool`` message each (``tool_call_id``; text content, prefixed
  ``Error: `` when ``is_error``), placed before the rest of that user turn, as chat completions
  wants them right after the assistant's ``tool_calls``. Images inside a tool result follow in
  a ``user`` message.
- assistant ``text`` → ``content``; ``tool_use`` → ``tool_calls`` (arguments JSON-encoded);
  ``thinking`` / ``redacted_thinking`` are dropped.

The response stream: ``delta.content`` → :class:`TextDelta` (index 0: chat completions has one
text per message); ``delta.tool_calls`` fragments are accumulated by ``index`` into ``tool_use``
blocks after the text block (arguments that are not a JSON object → ``request_failed``); the
``finish_reason`` maps ``stop``→``end_turn`` (``tool_use`` when tool calls were streamed),
``tool_calls``→``tool_use``, ``length``→``max_tokens``, ``content_filter``→``refusal``. Usage
comes from the final chunk (``stream_options.include_usage``); ``prompt_tokens`` includes cached
tokens, which are reported apart as ``cache_read_input_tokens``; no usage → zeros. Reasoning
deltas (``reasoning_content``) are not kept: they cannot be sent back. A server that ignores
``stream`` and answers one JSON completion is understood too.

Error mapping:

========================================  ==================  =========
upstream                                  kind                retryable
========================================  ==================  =========
429                                       ``rate_limited``    yes (``retry-after`` honoured)
503, 529                                  ``overloaded``      yes
other 5xx, connection error, bad stream   ``request_failed``  yes
408, timeout (``timeout_s`` per read)     ``timeout``         yes
401, 403                                  ``authentication``  no
other 4xx, unset or unusable base URL     ``invalid_request`` no
``{"error": ...}`` chunk mid-stream       by its ``code``     (``request_failed`` by default)
========================================  ==================  =========

The API key is only ever sent as ``Authorization: Bearer``; error messages are rebuilt from
the status and the upstream message with the key redacted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from hangar import __version__
from hangar.runtime.models.base import (
    ErrorKind,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
    Usage,
    retry_after_seconds,
)

NAME = "openai"

FINISH_REASONS: Mapping[str, str] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_DETAIL_MAX = 500


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAICompatProvider:
    """Streams from ``{base_url}/chat/completions`` (``base_url`` usually ends in ``/v1``)."""

    name = NAME

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        model_map: Mapping[str, str] | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key or None
        self._model_map = dict(model_map or {})
        headers = {"accept": "text/event-stream", "user-agent": f"hangar/{__version__}"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s), follow_redirects=False
        )

    def __repr__(self) -> str:
        key = "***" if self._api_key else None
        return f"OpenAICompatProvider(base_url={self._base_url!r}, api_key={key})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[TextDelta | ThinkingStart | ModelResponse]:
        if self._base_url is None:
            raise ModelError(
                "invalid_request",
                "No base URL is configured for the openai provider: set HANGAR_OPENAI_BASE_URL "
                "(e.g. http://127.0.0.1:8000/v1 for vLLM, http://127.0.0.1:11434/v1 for Ollama).",
            )
        body = request_body(request, self._model_map)
        state = _StreamState()
        try:
            async with self._client.stream("POST", f"{self._base_url}/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    raise self._status_error(resp.status_code, raw, resp.headers)
                if resp.status_code != 200:
                    raise ModelError(
                        "request_failed",
                        f"Unexpected upstream status {resp.status_code}.",
                        status=resp.status_code,
                    )
                if resp.headers.get("content-type", "").startswith("application/json"):
                    for item in state.whole(_json(await resp.aread())):
                        yield item
                else:
                    async for data in _sse_data(resp.aiter_lines()):
                        if data == "[DONE]":
                            break
                        for item in self._chunk(state, _json(data.encode())):
                            yield item
        except httpx.TimeoutException as exc:
            raise ModelError("timeout", "The upstream model request timed out.") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ModelError(
                "invalid_request",
                f"The openai provider's base URL is not usable ({self._redact(str(exc))}): "
                "check HANGAR_OPENAI_BASE_URL.",
            ) from exc
        except httpx.RequestError as exc:
            raise ModelError(
                "request_failed",
                f"Could not reach the upstream model API: {self._redact(str(exc) or type(exc).__name__)}",
            ) from exc
        yield state.response()

    def _chunk(self, state: _StreamState, chunk: Any) -> list[TextDelta]:
        if not isinstance(chunk, dict):
            raise ModelError("request_failed", "Invalid upstream stream: a chunk is not a JSON object.")
        if chunk.get("error") is not None:
            raise self._stream_error(chunk["error"])
        return state.feed(chunk)

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return text

    def _status_error(self, status: int, raw: bytes, headers: httpx.Headers) -> ModelError:
        kind = kind_for_status(status)
        detail = self._redact(_error_detail(raw))
        text = f"Upstream model API error {status} ({kind})"
        return ModelError(
            kind,
            f"{text}: {detail}" if detail else text,
            status=status,
            retry_after_s=retry_after_seconds(headers),
        )

    def _stream_error(self, error: Any) -> ModelError:
        """An ``{"error": ...}`` chunk inside a 200 stream (vLLM, LiteLLM do this)."""
        code = error.get("code") if isinstance(error, dict) else None
        status = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else None
        kind = kind_for_status(status) if status is not None and 400 <= status < 600 else "request_failed"
        detail = self._redact(_message_of(error))[:_DETAIL_MAX]
        text = "Upstream model API error in the stream" + (f" {status}" if status else "") + f" ({kind})"
        return ModelError(kind, f"{text}: {detail}" if detail else text, status=status)


def kind_for_status(status: int) -> ErrorKind:
    """The :class:`ModelError` kind of an upstream HTTP error status."""
    if status == 429:
        return "rate_limited"
    if status in (503, 529):
        return "overloaded"
    if status == 408:
        return "timeout"
    if status in (401, 403):
        return "authentication"
    if status >= 500:
        return "request_failed"
    return "invalid_request"


class _StreamState:
    """What the chunks have said so far."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, _ToolCall] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()

    def feed(self, chunk: dict[str, Any]) -> list[TextDelta]:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = _usage(usage)
        out: list[TextDelta] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text.append(content)
                out.append(TextDelta(0, content))
            for fragment in delta.get("tool_calls") or ():
                self._tool_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def _tool_fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise ModelError(
                "request_failed", "Invalid upstream stream: a tool call fragment is not an object."
            )
        index = fragment.get("index")
        if not isinstance(index, int):
            index = len(self.calls)
        call = self.calls.setdefault(index, _ToolCall())
        if fragment.get("id") and not call.id:
            call.id = str(fragment["id"])
        function = fragment.get("function") or {}
        if function.get("name") and not call.name:
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif isinstance(arguments, dict):  # a few servers send the object itself
            call.arguments += json.dumps(arguments)

    def whole(self, completion: Any) -> list[TextDelta]:
        """A non-streamed ``chat.completion`` answer, folded into the same state."""
        if not isinstance(completion, dict):
            raise ModelError("request_failed", "Invalid upstream response: not a JSON object.")
        choices = [
            {
                "index": c.get("index", 0),
                "delta": {
                    "content": (c.get("message") or {}).get("content"),
                    "tool_calls": [
                        {**t, "index": i}
                        for i, t in enumerate((c.get("message") or {}).get("tool_calls") or ())
                    ],
                },
                "finish_reason": c.get("finish_reason"),
            }
            for c in completion.get("choices") or ()
            if isinstance(c, dict)
        ]
        return self.feed({"choices": choices, "usage": completion.get("usage")})

    def response(self) -> ModelResponse:
        if self.finish_reason is None:
            raise ModelError("request_failed", "The upstream stream ended before a finish_reason.")
        content: list[dict[str, Any]] = []
        if self.text:
            content.append({"type": "text", "text": "".join(self.text)})
        for index in sorted(self.calls):
            call = self.calls[index]
            if not call.name:
                raise ModelError("request_failed", f"Invalid upstream stream: tool call {index} has no name.")
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
                    "name": call.name,
                    "input": _arguments(call, index),
                }
            )
        stop = FINISH_REASONS.get(self.finish_reason, "end_turn")
        if self.calls and stop == "end_turn":
            stop = "tool_use"  # servers that say "stop" after tool calls (older Ollama, llama.cpp)
        return ModelResponse(content=content, stop_reason=stop, usage=self.usage)


def _arguments(call: _ToolCall, index: int) -> dict[str, Any]:
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except json.JSONDecodeError as exc:
        raise ModelError(
            "request_failed",
            f"Invalid upstream stream: the arguments of tool call {index} ({call.name}) are not valid "
            f"JSON: {exc.msg} at position {exc.pos}.",
        ) from exc
    if not isinstance(value, dict):
        raise ModelError(
            "request_failed",
            f"Invalid upstream stream: the arguments of tool call {index} ({call.name}) are not "
            "a JSON object.",
        )
    return value


def _usage(raw: dict[str, Any]) -> Usage:
    prompt = _int(raw.get("prompt_tokens"))
    details = raw.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=_int(raw.get("completion_tokens")),
        cache_read_input_tokens=cached,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError("request_failed", "Invalid upstream stream: a chunk is not valid JSON.") from exc


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _error_detail(raw: bytes) -> str:
    """The upstream's error message from the common envelopes, else the start of the body."""
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                return _message_of(body[key])[:_DETAIL_MAX]
    return raw.decode(errors="replace").strip()[:_DETAIL_MAX]


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error.get("code") or "").strip()
    return str(error).strip()


# --------------------------------------------------------------------------- request translation


def request_body(request: ModelRequest, model_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The chat-completions request body for ``request``."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        messages.extend(translate_message(message))
    body: dict[str, Any] = {
        "model": (model_map or {}).get(request.model, request.model),
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    return body


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def translate_message(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Messages-API turn → one or more chat-completions messages."""
    role = message["role"]
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks: list[dict[str, Any]] = [b for b in content or () if isinstance(b, dict)]
    if role == "assistant":
        return [_assistant(blocks)]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            text, images = _tool_result(block)
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
            parts.extend(images)
        else:
            part = _user_part(block)
            if part is not None:
                parts.append(part)
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def _assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    elif not text:
        out["content"] = ""
    return out


def _tool_result(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    for item in content if isinstance(content, list) else ():
        part = _user_part(item) if isinstance(item, dict) else None
        if part is None:
            continue
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    text = "\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return text, images


def _user_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
            return {"type": "image_url", "image_url": {"url": url}}
        if source.get("type") == "url":
            return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
        return {"type": "text", "text": "[image omitted: unsupported source]"}
    if kind == "document":
        if source.get("type") == "text":
            return {"type": "text", "text": source.get("data", "")}
        title = block.get("title")
        return {"type": "text", "text": f"[document {title!r} omitted: not supported by this model]"}
    return None  # thinking and other blocks have no chat-completions form


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts
