"""MCP connections for agent sessions, through the official ``mcp`` SDK.

:class:`McpSessionPool` (one per server process, owned by the app's lifespan) hands out one
:class:`McpConnection` per (session, MCP server name), connecting on first use::

    conn = await pool.get(session_id, {"name": "github", "url": "https://…/mcp"},
                          headers_factory=vault_headers)
    tools = await conn.list_tools()          # cached per connection
    result = await conn.call("search", {"q": "x"}, timeout_s=60)
    ...
    await pool.close_session(session_id)

**Transport rule.** A URL whose path ends in ``/sse`` is a legacy SSE endpoint (HTTP+SSE,
protocol 2024-11-05 style). Any other URL is tried with streamable HTTP first; when its
handshake fails with HTTP 404 or 405 (a server that only serves legacy SSE at that URL), the
same URL is tried with SSE. The transport that worked is kept for reconnects. Either way the SDK
negotiates the protocol version (``server/discover``, falling back to ``initialize``).

**Failures.** Connecting raises :class:`McpConnectionFailed` (unreachable, timed out, handshake
refused) or :class:`McpAuthenticationFailed` (HTTP 401/403). A call whose connection turns out
to be broken reconnects once; the call is sent again only when it provably never reached the
server (the connection failed before the request was accepted, or the server had forgotten
the MCP session); otherwise it raises :class:`McpConnectionFailed` and the next call starts on
a fresh connection. Everything else — the tool failed, the server answered a JSON-RPC error,
the call timed out — is an ``is_error`` :class:`McpCallResult`.

Each connection runs in a task of its own, which enters and leaves the SDK's client (its anyio
task groups must be entered and left by one task); calls may come from any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from hangar import __version__
from hangar.runtime.mcp._wire import Auth, HeadersFactory, Observer, UnauthorizedHook, safe_url
from hangar.runtime.mcp.errors import McpAuthenticationFailed, McpConnectionFailed, McpError
from hangar.runtime.mcp.results import McpCallResult, McpTool, error_result

if TYPE_CHECKING:  # the SDK is imported when the first connection opens (it takes seconds)
    import httpx2
    from mcp.client._transport import TransportStreams
    from mcp.client.session import IncomingMessage

    from mcp import Client

logger = logging.getLogger(__name__)

TransportKind = Literal["streamable_http", "sse"]

TransportResolver = Callable[[str, "str | None"], "httpx2.AsyncBaseTransport | None"]
"""Given an MCP server URL and the workspace of the session connecting, the httpx2 transport to
reach it with (e.g. through one of that workspace's MCP tunnels: ``TunnelHub.transport_for``), or
``None`` for a direct connection."""

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_LIST_TIMEOUT_S = 30.0
SSE_READ_TIMEOUT_S = 300.0
"""How long an idle SSE stream is kept before it is dropped (the next call reconnects)."""
_STOP_GRACE_S = 2.0
_MAX_TOOL_PAGES = 100
_FALLBACK_STATUSES = (404, 405)
# JSON-RPC codes (mcp_types.jsonrpc), here to keep the SDK out of import time.
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INTERNAL_ERROR = -32603


@dataclass(eq=False)
class _Live:
    """One connected SDK client and the task that owns it."""

    observer: Observer
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None
    broken: bool = False

    @property
    def usable(self) -> bool:
        return self.client is not None and not self.broken and self.task is not None and not self.task.done()

    async def stop(self) -> None:
        self.broken = True
        self.stopping.set()
        task = self.task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_GRACE_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class McpConnection:
    """The connection of one session to one MCP server (see the module docstring)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        auth: Auth | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        list_timeout_s: float = DEFAULT_LIST_TIMEOUT_S,
        transport_resolver: TransportResolver | None = None,
        workspace_id: str | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.auth = auth or Auth()
        self.transport_resolver = transport_resolver
        self.workspace_id = workspace_id
        self.connect_timeout_s = connect_timeout_s
        self.list_timeout_s = list_timeout_s
        self.connects = 0
        """How many times a connection was established (1 after the first, +1 per reconnect)."""
        self._kind: TransportKind | None = "sse" if _is_sse_url(url) else None
        self._live: _Live | None = None
        self._lock = asyncio.Lock()
        self._tools: list[McpTool] | None = None
        self._closed = False

    @property
    def transport(self) -> TransportKind | None:
        """The transport in use (``None`` before the first connection)."""
        return self._kind if self.connects else None

    @property
    def protocol_version(self) -> str | None:
        live = self._live
        return live.client.protocol_version if live is not None and live.client is not None else None

    # ------------------------------------------------------------------ public

    async def connect(self) -> None:
        """Connect unless connected. Raises :class:`McpError`."""
        await self._ensure()

    async def list_tools(self) -> list[McpTool]:
        """The server's tools, listed once per connection (reconnecting or a
        ``notifications/tools/list_changed`` drops the cache)."""
        tools = self._tools
        if tools is not None:
            return list(tools)
        for attempt in range(2):
            live = await self._ensure()
            assert live.client is not None
            denials = live.observer.denials
            try:
                async with asyncio.timeout(self.list_timeout_s):
                    tools = await self._list_all(live.client)
            except TimeoutError:
                raise McpConnectionFailed(
                    self.name,
                    f"MCP server {self.name!r} did not list its tools within {self.list_timeout_s:g} s",
                ) from None
            except Exception as exc:
                if live.observer.denials > denials:
                    raise self._denied(live.observer) from exc
                if _is_transport_failure(exc, live.observer) and attempt == 0:
                    live.broken = True
                    continue
                raise McpConnectionFailed(
                    self.name,
                    live.observer.scrub(
                        f"MCP server {self.name!r} could not list its tools: {_describe(exc, live.observer)}"
                    ),
                ) from exc
            if live is self._live and not live.broken:
                self._tools = tools
            return list(tools)
        raise AssertionError("unreachable")

    async def refresh(self) -> list[McpTool]:
        """List the tools again, bypassing the cache."""
        self._tools = None
        return await self.list_tools()

    async def call(self, tool: str, arguments: dict[str, Any], *, timeout_s: float) -> McpCallResult:
        """Call ``tool`` (its bare MCP name). Tool failures, JSON-RPC errors and timeouts are
        ``is_error`` results; connection and authentication failures raise :class:`McpError`."""
        for attempt in range(2):
            live = await self._ensure()
            assert live.client is not None
            observer = live.observer
            reached, denials = observer.calls_reached, observer.denials
            try:
                async with asyncio.timeout(timeout_s):
                    result = await live.client.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
            except TimeoutError:
                return error_result(f"{tool}: the MCP server did not answer within {timeout_s:g} s")
            except Exception as exc:
                if observer.denials > denials:
                    raise self._denied(observer) from exc
                if _jsonrpc_code(exc) == _REQUEST_TIMEOUT:
                    return error_result(f"{tool}: the MCP server did not answer within {timeout_s:g} s")
                if not _is_transport_failure(exc, observer):
                    return error_result(observer.scrub(f"{tool}: {_describe(exc, observer)}"))
                live.broken = True
                if attempt == 0 and observer.calls_reached == reached:
                    logger.info("mcp call retried on a new connection", extra={"mcp_server": self.name})
                    continue
                raise McpConnectionFailed(
                    self.name,
                    f"lost the connection to MCP server {self.name!r} during a call to {tool}; "
                    "the call may or may not have run",
                ) from exc
            from hangar.runtime.mcp.content import convert_result

            converted = convert_result(result)
            if observer.secrets:
                converted = _scrub_result(converted, observer)
            return converted
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Disconnect; later use raises :class:`McpConnectionFailed`."""
        self._closed = True
        async with self._lock:
            live, self._live = self._live, None
            if live is not None:
                await live.stop()

    # ------------------------------------------------------------------ connecting

    async def _ensure(self) -> _Live:
        live = self._live
        if live is not None and live.usable:
            return live
        async with self._lock:
            if self._closed:
                raise McpConnectionFailed(self.name, f"the connection to MCP server {self.name!r} is closed")
            live = self._live
            if live is not None and live.usable:
                return live
            self._live = None
            self._tools = None
            if live is not None:
                await live.stop()
            live = await self._open()
            self._live = live
            self.connects += 1
            return live

    async def _open(self) -> _Live:
        try:
            if self._kind is not None:
                return await self._open_with(self._kind)
            try:
                live = await self._open_with("streamable_http")
            except _HandshakeRefused as refused:
                if refused.status not in _FALLBACK_STATUSES:
                    raise
                live = await self._open_with("sse")
                self._kind = "sse"
                return live
            self._kind = "streamable_http"
            return live
        except _HandshakeRefused as refused:
            raise refused.error from refused.__cause__

    async def _open_with(self, kind: TransportKind) -> _Live:
        live = _Live(Observer())
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        live.task = asyncio.create_task(self._run(live, kind, ready), name=f"mcp:{self.name}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            await live.stop()
            raise McpConnectionFailed(
                self.name,
                f"could not connect to MCP server {self.name!r} at {safe_url(self.url)}: "
                f"no answer within {self.connect_timeout_s:g} s",
            ) from None
        except Exception as exc:
            await live.stop()
            observer = live.observer
            if observer.denied_status is not None:
                raise self._denied(observer) from exc
            error = McpConnectionFailed(
                self.name,
                observer.scrub(
                    f"could not connect to MCP server {self.name!r} at {safe_url(self.url)}: "
                    f"{_describe(exc, observer)}"
                ),
            )
            raise _HandshakeRefused(error, observer.last_status) from exc
        except asyncio.CancelledError:
            await live.stop()
            raise
        logger.info(
            "mcp connected",
            extra={"mcp_server": self.name, "mcp_transport": kind, "mcp_url": safe_url(self.url)},
        )
        return live

    async def _run(self, live: _Live, kind: TransportKind, ready: asyncio.Future[None]) -> None:
        """Owns one SDK client from handshake to close."""
        import mcp_types

        from mcp import Client

        try:
            async with AsyncExitStack() as stack:
                transport = self._transport(kind, live.observer, stack)
                client = Client(
                    transport,
                    mode="auto",
                    cache=None,
                    client_info=mcp_types.Implementation(name="hangar", version=__version__),
                    message_handler=self._on_message,
                )
                await stack.enter_async_context(client)
                live.client = client
                ready.set_result(None)
                await live.stopping.wait()
        except Exception as exc:  # the SDK raises ExceptionGroups of transport errors
            live.error = exc
            live.broken = True
            if not ready.done():
                ready.set_exception(exc)
            elif not live.stopping.is_set():
                logger.info(
                    "mcp connection lost",
                    extra={"mcp_server": self.name, "error": _describe(exc, live.observer)},
                )
        finally:
            live.broken = True

    def _transport(
        self, kind: TransportKind, observer: Observer, stack: AsyncExitStack
    ) -> AbstractAsyncContextManager[TransportStreams]:
        import httpx2
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        from hangar.runtime.mcp._http import AuthTransport

        def http_client(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            resolver = self.transport_resolver
            resolved = resolver(self.url, self.workspace_id) if resolver is not None else None
            return httpx2.AsyncClient(
                transport=AuthTransport(resolved or httpx2.AsyncHTTPTransport(), self.auth, observer),
                timeout=httpx2.Timeout(self.connect_timeout_s, read=SSE_READ_TIMEOUT_S),
                headers=headers,
            )

        if kind == "sse":
            return sse_client(self.url, httpx_client_factory=http_client, sse_read_timeout=SSE_READ_TIMEOUT_S)
        client = http_client()
        stack.push_async_callback(client.aclose)
        return streamable_http_client(self.url, http_client=client)

    async def _on_message(self, message: IncomingMessage) -> None:
        import mcp_types

        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._tools = None

    def _denied(self, observer: Observer) -> McpAuthenticationFailed:
        status = observer.denied_status
        what = "rejected the credentials" if status == 401 else "refused access"
        return McpAuthenticationFailed(
            self.name, f"MCP server {self.name!r} at {safe_url(self.url)} {what} (HTTP {status})"
        )

    @staticmethod
    async def _list_all(client: Client) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor: str | None = None
        for _ in range(_MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(
                McpTool(
                    name=t.name,
                    description=t.description,
                    input_schema=dict(t.input_schema),
                    annotations=t.annotations.model_dump(exclude_none=True) if t.annotations else None,
                )
                for t in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools


class _HandshakeRefused(Exception):
    """A connection attempt failed; ``status`` is the last HTTP status seen (for the SSE fallback)."""

    def __init__(self, error: McpError, status: int | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status


class McpSessionPool:
    """Every session's MCP connections (one pool per server process)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        list_timeout_s: float = DEFAULT_LIST_TIMEOUT_S,
        transport_resolver: TransportResolver | None = None,
    ) -> None:
        """``transport_resolver`` picks the inner HTTP transport per server URL (MCP tunnels)."""
        self.connect_timeout_s = connect_timeout_s
        self.list_timeout_s = list_timeout_s
        self.transport_resolver = transport_resolver
        self._connections: dict[tuple[str, str], McpConnection] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._closed = False

    async def get(
        self,
        session_id: str,
        server: Mapping[str, Any],
        *,
        headers_factory: HeadersFactory | None = None,
        on_unauthorized: UnauthorizedHook | None = None,
        workspace_id: str | None = None,
    ) -> McpConnection:
        """The session's connection to ``server`` (``{"name", "url"}``), connected.

        ``workspace_id`` (the session's) limits the tunnels the ``transport_resolver`` may use.

        ``headers_factory`` is awaited before every HTTP request for the headers to set on it
        (e.g. ``{"Authorization": "Bearer …"}`` from a vault); ``on_unauthorized`` is awaited
        when the server answers 401, before the request is sent once more with fresh headers.
        Both replace the ones given before for this session and server. Raises
        :class:`McpConnectionFailed` / :class:`McpAuthenticationFailed`; a failed connection is
        not kept, so the next ``get`` tries again.
        """
        if self._closed:
            raise RuntimeError("the MCP session pool is closed")
        name, url = str(server["name"]), str(server["url"])
        key = (session_id, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is not None and conn.url != url:
                del self._connections[key]
                await conn.aclose()
                conn = None
            auth = Auth(headers_factory, on_unauthorized)
            if conn is None:
                conn = McpConnection(
                    name,
                    url,
                    auth=auth,
                    connect_timeout_s=self.connect_timeout_s,
                    list_timeout_s=self.list_timeout_s,
                    transport_resolver=self.transport_resolver,
                    workspace_id=workspace_id,
                )
                await conn.connect()
                self._connections[key] = conn
            else:
                conn.auth.headers_factory = headers_factory
                conn.auth.on_unauthorized = on_unauthorized
                await conn.connect()
            return conn

    def connections(self, session_id: str) -> dict[str, McpConnection]:
        """The session's open connections by server name."""
        return {name: c for (sid, name), c in self._connections.items() if sid == session_id}

    async def close_session(self, session_id: str) -> None:
        """Disconnect every server of the session."""
        keys = [k for k in self._connections if k[0] == session_id]
        await self._close(keys)
        for key in [k for k in self._locks if k[0] == session_id]:
            del self._locks[key]

    async def aclose(self) -> None:
        """Disconnect everything (server shutdown)."""
        self._closed = True
        await self._close(list(self._connections))
        self._locks.clear()

    async def _close(self, keys: list[tuple[str, str]]) -> None:
        connections = [self._connections.pop(k) for k in keys]
        await asyncio.gather(*(c.aclose() for c in connections))


# --------------------------------------------------------------------------- helpers


def _is_sse_url(url: str) -> bool:
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return path.rstrip("/").endswith("/sse")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _jsonrpc_code(exc: BaseException) -> int | None:
    from mcp.shared.exceptions import MCPError

    return next((leaf.code for leaf in _leaves(exc) if isinstance(leaf, MCPError)), None)


def _is_transport_failure(exc: BaseException, observer: Observer) -> bool:
    """The connection (not the tool) failed: it is worth reconnecting."""
    import anyio
    import httpx2
    from mcp.shared.exceptions import MCPError

    transport_errors = (
        httpx2.TransportError,
        httpx2.HTTPStatusError,
        OSError,
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
    )
    for leaf in _leaves(exc):
        if isinstance(leaf, MCPError):
            if leaf.code == _CONNECTION_CLOSED:
                return True
            if leaf.code == _INVALID_REQUEST and observer.last_status == 404:
                return True  # "Session terminated": the server forgot the MCP session (restart)
        elif isinstance(leaf, transport_errors):
            return True
    return False


def _describe(exc: BaseException, observer: Observer) -> str:
    """Words for a failure, without URLs or header values."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from pydantic import ValidationError

    from hangar.runtime.mcp._http import NOT_SENT

    for leaf in _leaves(exc):
        if isinstance(leaf, httpx2.HTTPStatusError):
            return f"HTTP {leaf.response.status_code}"
        if getattr(leaf, "safe_to_show", False):  # e.g. an MCP tunnel saying why it is closed
            return str(leaf)
        if isinstance(leaf, NOT_SENT):
            return "connection timed out" if isinstance(leaf, httpx2.ConnectTimeout) else "connection refused"
        if isinstance(leaf, httpx2.TimeoutException):
            return "timed out"
        if isinstance(leaf, httpx2.TransportError | OSError):
            return f"network error ({type(leaf).__name__})"
        if isinstance(leaf, MCPError):
            status = observer.last_status
            if leaf.code in (_INTERNAL_ERROR, _METHOD_NOT_FOUND) and status and status >= 400:
                return f"HTTP {status}"
            if leaf.code == _CONNECTION_CLOSED:
                return "the connection was closed"
            return leaf.message or f"JSON-RPC error {leaf.code}"
        if isinstance(leaf, ValidationError):
            return "the server's answer did not match the MCP schema"
    return type(next(_leaves(exc), exc)).__name__


def _scrub_result(result: McpCallResult, observer: Observer) -> McpCallResult:
    content = [
        {**b, "text": observer.scrub(b["text"])} if b.get("type") == "text" else b for b in result.content
    ]
    return McpCallResult(content, result.is_error)
