"""The model-provider contract the agent loop programs against.

A provider turns one :class:`ModelRequest` (Messages-API shaped) into a stream: zero or more
:class:`TextDelta` followed by exactly one :class:`ModelResponse`, or raises :class:`ModelError`.

Providers never retry on their own: whether and when to retry belongs to the loop, which reads
:attr:`ModelError.retryable` and :attr:`ModelError.retry_after_s`.

Cancellation: the loop may cancel the task consuming a stream at any moment (an interrupt).
Providers hold upstream resources only inside ``async with`` blocks, so the cancellation closes
them. A consumer that stops iterating early without cancelling should close the generator
explicitly::

    async with contextlib.aclosing(provider.stream(request)) as events:
        async for item in events:
            ...
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

ErrorKind = Literal[
    "overloaded", "rate_limited", "request_failed", "timeout", "authentication", "invalid_request"
]
StopReason = Literal["end_turn", "tool_use", "max_tokens", "refusal", "stop_sequence", "pause_turn"]

ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))
RETRYABLE_KINDS: frozenset[str] = frozenset({"overloaded", "rate_limited", "request_failed", "timeout"})


@dataclass(frozen=True)
class ModelRequest:
    """One model call. ``messages`` and ``tools`` use the Messages API's wire format."""

    model: str
    """Model id, e.g. ``claude-sonnet-4-6`` or ``scripted``."""
    system: str | None
    messages: list[dict[str, Any]]
    """``[{role: "user"|"assistant", content: str | [blocks]}]``; blocks are text, tool_use,
    tool_result, image, document (and thinking, echoed back from earlier responses)."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """Tool definitions ``{name, description, input_schema}``."""
    max_tokens: int = 8192
    effort: str | None = None
    """``low|medium|high|xhigh|max``; ``None`` leaves the model's default."""


@dataclass(frozen=True)
class ThinkingStart:
    """The model began a thinking block (``agent.thinking`` previews are start-only)."""


@dataclass(frozen=True)
class TextDelta:
    """Streamed text for the ``index``-th text block of the response (dense from 0, counting
    text blocks only: a tool_use block between two text blocks does not take an index)."""

    index: int
    text: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@dataclass(frozen=True)
class ModelResponse:
    """The final message. ``content`` blocks are plain dicts, ready to be sent back as the
    assistant turn of the next request: ``{"type":"text","text"}``,
    ``{"type":"tool_use","id","name","input"}``, ``{"type":"thinking","thinking","signature"}``,
    ``{"type":"redacted_thinking","data"}``."""

    content: list[dict[str, Any]]
    stop_reason: str
    """``end_turn | tool_use | max_tokens | refusal | stop_sequence`` (or ``pause_turn``)."""
    usage: Usage


class ModelError(Exception):
    """A failed model call.

    ``kind`` is one of ``overloaded``, ``rate_limited``, ``request_failed``, ``timeout`` (all
    retryable by default), ``authentication`` and ``invalid_request`` (not retryable).
    ``status`` is the upstream HTTP status when there was one. Messages never contain secrets.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown model error kind {kind!r}")
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return (
            f"ModelError(kind={self.kind!r}, status={self.status!r}, retryable={self.retryable!r}, "
            f"retry_after_s={self.retry_after_s!r}, message={self.message!r})"
        )


class ModelProvider(Protocol):
    """A source of model responses (``anthropic``, ``scripted``, ...)."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[TextDelta | ThinkingStart | ModelResponse]:
        """Yield text deltas, then exactly one :class:`ModelResponse` last; raise :class:`ModelError`."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections. The provider is unusable afterwards."""
        ...


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), as seconds; else None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(raw)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
