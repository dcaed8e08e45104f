"""The HTTP layer under one MCP connection: per-request auth headers, and what happened.

(:class:`AuthTransport` lives in :mod:`._http`, imported only when a connection opens.)

``AuthTransport`` wraps httpx2's transport for both MCP transports (streamable HTTP and
legacy SSE). On every request it asks the connection's ``headers_factory`` for fresh headers
(a vault can rotate a token between two calls) and sets them on that request only. When the
server answers 401 and an ``on_unauthorized`` hook is set (a vault refreshes an OAuth token
there), the hook runs once and the same request is sent again with fresh headers.

:class:`Observer` records what the MCP SDK does not report: the HTTP status of a rejection
(the SDK folds a 401 into a generic JSON-RPC error), and whether a ``tools/call`` request
reached the server (so a call is re-sent after a reconnect only when it provably never ran).
Header values are kept only to be scrubbed from messages; they are never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HeadersFactory = Callable[[], Awaitable[Mapping[str, str]]]
"""Returns the headers (e.g. ``{"Authorization": "Bearer …"}``) to set on one HTTP request."""

UnauthorizedHook = Callable[[], Awaitable[None]]
"""Called when the server answers 401, before the request is sent once more."""

_MIN_SECRET = 6


@dataclass
class Auth:
    """The auth hooks of one connection; replaced in place when the pool hands it out again."""

    headers_factory: HeadersFactory | None = None
    on_unauthorized: UnauthorizedHook | None = None


@dataclass
class Observer:
    """What the HTTP layer saw during one connection."""

    last_status: int | None = None
    denied_status: int | None = None
    denials: int = 0
    calls_reached: int = 0
    secrets: set[str] = field(default_factory=set)

    def remember(self, headers: Mapping[str, str]) -> None:
        for value in headers.values():
            for secret in (value, value.partition(" ")[2]):
                if len(secret) >= _MIN_SECRET:
                    self.secrets.add(secret)

    def scrub(self, text: str) -> str:
        """``text`` without any header value this connection sent."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def safe_url(url: str) -> str:
    """``url`` for messages: scheme, host, port and path (no credentials, query or fragment)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        host = parts.hostname or ""
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"
