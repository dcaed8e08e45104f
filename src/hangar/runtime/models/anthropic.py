"""The ``anthropic`` provider: the upstream Messages API through the official SDK.

The SDK client is built with ``max_retries=0``: a failed call surfaces at once as a
:class:`ModelError` and the loop decides about retrying. Error mapping:

==========================================  ==================  =========
upstream                                    kind                retryable
==========================================  ==================  =========
429 / ``rate_limit_error``                  ``rate_limited``    yes (``retry-after`` honoured)
529 / ``overloaded_error``                  ``overloaded``      yes
other 5xx, 409, connection error            ``request_failed``  yes
408, timeout                                ``timeout``         yes
401, 403                                    ``authentication``  no
400 and other 4xx                           ``invalid_request`` no
==========================================  ==================  =========

The API key never appears in a message: errors are rebuilt from the status and the upstream
``error.message`` (with the key redacted should the upstream echo it).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx2

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

if TYPE_CHECKING:
    import anthropic

NAME = "anthropic"


def _sdk() -> ModuleType:
    """The official SDK, imported on first use: it takes seconds to import (a thousand type
    modules), which every server start and CLI call would otherwise pay for."""
    import anthropic

    return anthropic


# error.type of an upstream envelope (also sent as an SSE ``error`` event mid-stream).
_TYPE_KINDS: dict[str, tuple[ErrorKind, int]] = {
    "overloaded_error": ("overloaded", 529),
    "rate_limit_error": ("rate_limited", 429),
    "api_error": ("request_failed", 500),
    "timeout_error": ("timeout", 504),
    "authentication_error": ("authentication", 401),
    "permission_error": ("authentication", 403),
    "billing_error": ("authentication", 402),
    "invalid_request_error": ("invalid_request", 400),
    "not_found_error": ("invalid_request", 404),
    "request_too_large": ("invalid_request", 413),
}


class AnthropicProvider:
    """Streams from ``{base_url}/v1/messages`` with ``api_key``."""

    name = NAME

    def __init__(self, base_url: str | None, api_key: str | None, timeout_s: float) -> None:
        self._api_key = api_key or None
        self._client: anthropic.AsyncAnthropic | None = None
        if self._api_key is not None:
            self._client = _sdk().AsyncAnthropic(
                api_key=self._api_key, base_url=base_url, timeout=timeout_s, max_retries=0
            )

    def __repr__(self) -> str:
        base = self._client.base_url if self._client is not None else None
        return f"AnthropicProvider(base_url={str(base)!r}, api_key={'***' if self._api_key else None})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def stream(self, request: ModelRequest) -> AsyncIterator[TextDelta | ThinkingStart | ModelResponse]:
        if self._client is None:
            raise ModelError(
                "authentication",
                "No upstream API key is configured for the anthropic provider: "
                "set HANGAR_ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY).",
                retryable=False,
            )
        kwargs = _request_kwargs(request)
        anthropic = _sdk()
        try:
            with warnings.catch_warnings():
                # Model deprecation is the catalogue's business (its lifecycle field); the SDK's
                # warning would only be noise in the server log.
                warnings.simplefilter("ignore")
                manager = self._client.messages.stream(**kwargs)
            async with manager as stream:
                text_index: dict[int, int] = {}
                final: Any = None
                async for event in stream:
                    if event.type == "content_block_start":
                        if event.content_block.type == "text":
                            text_index[event.index] = len(text_index)
                        elif event.content_block.type == "thinking":
                            yield ThinkingStart()
                    elif event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield TextDelta(text_index.get(event.index, 0), event.delta.text)
                    elif event.type == "message_stop":
                        final = event.message
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except (anthropic.APITimeoutError, httpx2.TimeoutException) as exc:
            raise ModelError("timeout", "The upstream model request timed out.") from exc
        except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
            raise ModelError(
                "request_failed", f"Could not reach the upstream model API: {self._redact(str(exc))}"
            ) from exc
        except anthropic.APIResponseValidationError as exc:
            raise ModelError("request_failed", "The upstream model API sent an invalid response.") from exc
        except ValueError as exc:  # malformed tool input JSON in the stream (raised by the SDK)
            raise ModelError("request_failed", f"Invalid upstream stream: {self._redact(str(exc))}") from exc
        if final is None or final.stop_reason is None:
            raise ModelError("request_failed", "The upstream stream ended before message_stop.")
        yield ModelResponse(
            content=[_block_dict(block) for block in final.content],
            stop_reason=str(final.stop_reason),
            usage=Usage(
                input_tokens=final.usage.input_tokens or 0,
                output_tokens=final.usage.output_tokens or 0,
                cache_read_input_tokens=final.usage.cache_read_input_tokens or 0,
                cache_creation_input_tokens=final.usage.cache_creation_input_tokens or 0,
            ),
        )

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return text

    def _status_error(self, exc: anthropic.APIStatusError) -> ModelError:
        status = exc.status_code
        detail = self._redact(str(exc.api_message or exc.type or "").strip())
        kind: ErrorKind
        if status < 400 and exc.type in _TYPE_KINDS:  # an ``error`` event inside a 200 stream
            kind, status = _TYPE_KINDS[exc.type]
        elif status == 429:
            kind = "rate_limited"
        elif status == 529 or exc.type == "overloaded_error":
            kind = "overloaded"
        elif status == 408:
            kind = "timeout"
        elif status in (401, 403):
            kind = "authentication"
        elif status >= 500 or status == 409:
            kind = "request_failed"
        else:
            kind = "invalid_request"
        retry_after = retry_after_seconds(exc.response.headers) if status >= 400 else None
        text = f"Upstream model API error {status} ({kind})"
        return ModelError(
            kind, f"{text}: {detail}" if detail else text, status=status, retry_after_s=retry_after
        )


def _request_kwargs(request: ModelRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
    }
    if request.system:
        kwargs["system"] = request.system
    if request.tools:
        kwargs["tools"] = request.tools
    if request.effort:
        kwargs["output_config"] = {"effort": request.effort}
    return kwargs


def _block_dict(block: Any) -> dict[str, Any]:
    """An SDK content block → the plain dict the next request can send back."""
    kind = block.type
    if kind == "text":
        out: dict[str, Any] = {"type": "text", "text": block.text}
        if getattr(block, "citations", None):
            out["citations"] = [c.to_dict() for c in block.citations]
        return out
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input or {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    data: dict[str, Any] = block.to_dict(mode="json", exclude_none=True)
    return data
