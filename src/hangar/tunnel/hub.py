"""Hangar's side of MCP tunnels: the connected ``hangar tunnel`` clients, and httpx2 transports
that send requests through them.

:class:`TunnelHub` (one per app, built by ``create_app``) is given every WebSocket that dials
``/v1/tunnels/connect`` (:meth:`TunnelHub.serve`) and hands out transports
(:meth:`TunnelHub.transport_for`) for URLs on the tunnels' domains::

    pool = McpSessionPool(transport_resolver=hub.transport_for)
    # an agent's MCP server "https://files.3f9c….tunnel.hangar.internal/mcp" now goes through
    # the client connected for tunnel 3f9c…, which forwards it to its route "files"

Every request through a tunnel transport checks, at the time it is sent, that the tunnel exists,
is not archived, has at least one active CA certificate and has a client connected; otherwise
it fails at once with :class:`httpx2.ConnectError` naming the reason (the MCP client turns that
into ``mcp_connection_failed``). A request already under way when its client goes away fails
with :class:`httpx2.ReadError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx2
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from hangar.store.tunnels import TunnelRoute, TunnelStore
from hangar.tunnel.protocol import (
    CHUNK_BYTES,
    CLOSE_ARCHIVED,
    CLOSE_BAD_TOKEN,
    CLOSE_GOING_AWAY,
    Kind,
    ProtocolError,
    end_to_end,
    frame,
    header_pairs,
    json_frame,
    load_json,
    parse_frame,
)

__all__ = ["TunnelConnection", "TunnelHub", "TunnelTransport"]

log = logging.getLogger(__name__)


class TunnelRefused(httpx2.ConnectError):
    """Why a tunnel cannot carry a request. The message names no secret (a tunnel id, a domain,
    a route), so the MCP client shows it in ``session.error`` (``safe_to_show``)."""

    safe_to_show = True


class _Closed(Exception):
    """The tunnel connection went away."""


@dataclass(eq=False)
class _Stream:
    """One HTTP exchange in flight on a connection."""

    id: int
    head: asyncio.Future[tuple[int, list[tuple[str, str]]]]
    body: asyncio.Queue[bytes | BaseException | None] = field(default_factory=asyncio.Queue)
    finished: bool = False
    """The response body ended (or failed): nothing more arrives for this stream."""
    pump: asyncio.Task[None] | None = None

    def fail(self, error: BaseException) -> None:
        if not self.head.done():
            self.head.set_exception(error)
        elif not self.finished:
            self.body.put_nowait(error)
        self.finished = True


class TunnelConnection:
    """One connected ``hangar tunnel`` client."""

    def __init__(self, route: TunnelRoute, websocket: WebSocket) -> None:
        self.tunnel_id = route.id
        self.domain = route.domain
        self._ws = websocket
        self._send_lock = asyncio.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0
        self.closed = False

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise _Closed
        try:
            async with self._send_lock:
                if isinstance(data, str):
                    await self._ws.send_text(data)
                else:
                    await self._ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self.closed = True
            raise _Closed from exc

    async def run(self) -> None:
        """Read frames until the client goes away."""
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    continue  # no text messages are expected from the client
                self._dispatch(*parse_frame(data))
        except ProtocolError as exc:
            log.warning("tunnel client broke the protocol: %s", exc, extra={"tunnel_id": self.tunnel_id})
            await self.close(1002, "protocol error")
        finally:
            self.closed = True
            for stream in list(self._streams.values()):
                stream.fail(httpx2.ReadError(f"the client of tunnel {self.tunnel_id} disconnected"))
            self._streams.clear()

    def _dispatch(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.finished:
            return  # cancelled meanwhile
        if kind is Kind.RESPONSE:
            head = load_json(payload)
            status = head.get("status")
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise ProtocolError("a response status must be an HTTP status code")
            if not stream.head.done():
                stream.head.set_result((status, header_pairs(head.get("headers", []))))
        elif kind is Kind.DATA:
            stream.body.put_nowait(payload)
        elif kind is Kind.END:
            stream.body.put_nowait(None)
            stream.finished = True
            self._forget(stream)
        elif kind is Kind.ERROR:
            info = load_json(payload)
            message = f"tunnel {self.tunnel_id}: {info.get('message', 'the upstream request failed')}"
            reached = bool(info.get("reached", True)) or stream.head.done()
            stream.fail(httpx2.ReadError(message) if reached else TunnelRefused(message))
            self._forget(stream)
        else:
            raise ProtocolError(f"a client may not send {kind.name} frames")

    def _forget(self, stream: _Stream) -> None:
        self._streams.pop(stream.id, None)
        if stream.pump is not None and not stream.pump.done():
            stream.pump.cancel()

    async def cancel(self, stream: _Stream) -> None:
        """The caller gave up on ``stream``: tell the client to abort it."""
        done = stream.finished
        stream.finished = True
        if stream.id in self._streams:
            self._forget(stream)
            if not done:
                with contextlib.suppress(_Closed):
                    await self.send(frame(stream.id, Kind.CANCEL))

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            if self._ws.application_state == WebSocketState.CONNECTED:
                await self._ws.close(code, reason)

    # ------------------------------------------------------------------ requests

    async def request(
        self, request: httpx2.Request, route: str, response_timeout_s: float
    ) -> httpx2.Response:
        self._next_id += 1
        stream = _Stream(self._next_id, asyncio.get_running_loop().create_future())
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        head = {
            "route": route,
            "method": request.method,
            "target": request.url.raw_path.decode("ascii"),
            "headers": end_to_end(list(request.headers.raw)),
            "body": has_body,
        }
        self._streams[stream.id] = stream
        try:
            await self.send(json_frame(stream.id, Kind.HEAD, head))
        except _Closed:
            self._streams.pop(stream.id, None)
            raise TunnelRefused(
                f"the client of tunnel {self.tunnel_id} disconnected", request=request
            ) from None
        if has_body:
            stream.pump = asyncio.create_task(self._pump(stream, request))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        wait = min(response_timeout_s, read_timeout) if read_timeout is not None else response_timeout_s
        try:
            async with asyncio.timeout(wait):
                status, headers = await stream.head
        except TimeoutError:
            await self.cancel(stream)
            raise httpx2.ReadTimeout(
                f"tunnel {self.tunnel_id}: no response within {wait:g} s", request=request
            ) from None
        except httpx2.TransportError as exc:
            exc.request = request
            raise
        except BaseException:
            await self.cancel(stream)
            raise
        return httpx2.Response(
            status,
            headers=headers,
            stream=_ResponseBody(self, stream, read_timeout),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _pump(self, stream: _Stream, request: httpx2.Request) -> None:
        """Send the request body, then END."""
        try:
            async for chunk in _chunks(request):
                for start in range(0, len(chunk), CHUNK_BYTES):
                    await self.send(frame(stream.id, Kind.DATA, chunk[start : start + CHUNK_BYTES]))
            await self.send(frame(stream.id, Kind.END))
        except _Closed:
            stream.fail(httpx2.ReadError(f"the client of tunnel {self.tunnel_id} disconnected"))


class _ResponseBody(httpx2.AsyncByteStream):
    def __init__(self, conn: TunnelConnection, stream: _Stream, read_timeout: float | None) -> None:
        self._conn = conn
        self._stream = stream
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    item = await self._stream.body.get()
            except TimeoutError:
                await self._conn.cancel(self._stream)
                raise httpx2.ReadTimeout(f"tunnel {self._conn.tunnel_id}: the response stalled") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        await self._conn.cancel(self._stream)


class TunnelTransport(httpx2.AsyncBaseTransport):
    """Sends requests for ``https://<route>.<domain>/…`` through the tunnel of ``domain``."""

    def __init__(self, hub: TunnelHub, domain: str, route: str, workspace_id: str | None) -> None:
        self._hub = hub
        self.domain = domain
        self.route = route
        self.workspace_id = workspace_id

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not self.route:
            raise TunnelRefused(
                f"{request.url.host} names no route: tunnel URLs look like https://<route>.<tunnel domain>/…",
                request=request,
            )
        conn = await self._hub.connection_for(self.domain, self.workspace_id, request)
        return await conn.request(request, self.route, self._hub.response_timeout_s)

    async def aclose(self) -> None:
        """Nothing to release: the connection belongs to the hub."""


class TunnelHub:
    """Every connected tunnel client of one server (see the module docstring)."""

    def __init__(
        self, tunnels: TunnelStore, *, parent_domain: str, response_timeout_s: float = 300.0
    ) -> None:
        self._tunnels = tunnels
        self.parent_domain = parent_domain.lower().strip(".")
        self.response_timeout_s = response_timeout_s
        self._connections: dict[str, list[TunnelConnection]] = {}
        self._closing = False

    # ------------------------------------------------------------------ the MCP side

    def transport_for(self, url: str, workspace_id: str | None = None) -> TunnelTransport | None:
        """A transport for ``url`` when its host is under the tunnels' parent domain, else ``None``.

        Any host under the parent domain gets a transport (one that refuses, with the reason,
        when no live tunnel has that domain), so such a URL never goes to DNS. With
        ``workspace_id``, only that workspace's tunnels are reachable.
        """
        try:
            host = (urlsplit(url).hostname or "").lower().rstrip(".")
        except ValueError:
            return None
        suffix = "." + self.parent_domain
        if not host.endswith(suffix):
            return None
        labels = host[: -len(suffix)].split(".")
        domain = f"{labels[-1]}{suffix}"
        return TunnelTransport(self, domain, ".".join(labels[:-1]), workspace_id)

    async def connection_for(
        self, domain: str, workspace_id: str | None, request: httpx2.Request | None = None
    ) -> TunnelConnection:
        """The live connection for ``domain``'s tunnel; :class:`httpx2.ConnectError` saying why not."""

        def refuse(message: str) -> httpx2.ConnectError:
            return TunnelRefused(message, request=request)

        route = await self._tunnels.route_by_domain(domain)
        if route is None or (workspace_id is not None and route.workspace_id != workspace_id):
            raise refuse(f"no tunnel has the domain {domain}")
        if route.archived:
            raise refuse(f"tunnel {route.id} is archived")
        if not route.certificates:
            raise refuse(
                f"tunnel {route.id} has no active CA certificate: traffic is refused until one is added"
            )
        live = [c for c in self._connections.get(route.id, []) if not c.closed]
        if not live:
            raise refuse(f"no `hangar tunnel` client is connected to tunnel {route.id}")
        return live[-1]

    # ------------------------------------------------------------------ the client side

    async def serve(self, websocket: WebSocket) -> None:
        """Run one client connection (the ``/v1/tunnels/connect`` WebSocket) until it ends."""
        token = _bearer(websocket)
        route = await self._tunnels.by_token(token) if token and not self._closing else None
        await websocket.accept()
        if route is None:
            await websocket.close(CLOSE_BAD_TOKEN, "unknown, rotated or archived tunnel token")
            return
        conn = TunnelConnection(route, websocket)
        self._connections.setdefault(route.id, []).append(conn)
        log.info("tunnel client connected", extra={"tunnel_id": route.id})
        try:
            hello = {
                "type": "hello",
                "tunnel_id": route.id,
                "domain": route.domain,
                "ca_certificates": list(route.certificates),
            }
            await conn.send(json.dumps(hello))
            await conn.run()
        except _Closed:
            pass
        finally:
            conn.closed = True
            remaining = [c for c in self._connections.get(route.id, []) if c is not conn]
            if remaining:
                self._connections[route.id] = remaining
            else:
                self._connections.pop(route.id, None)
            log.info("tunnel client disconnected", extra={"tunnel_id": route.id})

    def connected(self, tunnel_id: str) -> int:
        """How many clients are connected for the tunnel."""
        return sum(1 for c in self._connections.get(tunnel_id, []) if not c.closed)

    def open_streams(self, tunnel_id: str) -> int:
        """Requests in flight through the tunnel."""
        return sum(c.open_streams for c in self._connections.get(tunnel_id, []))

    async def certificates_changed(self, tunnel_id: str) -> None:
        """Send the tunnel's current CA certificates to its connected clients."""
        conns = [c for c in self._connections.get(tunnel_id, []) if not c.closed]
        if not conns:
            return
        route = await self._tunnels.route_by_id(tunnel_id)
        if route is None:
            return
        message = json.dumps({"type": "certificates", "ca_certificates": list(route.certificates)})
        for conn in conns:
            with contextlib.suppress(_Closed):
                await conn.send(message)

    async def disconnect(self, tunnel_id: str, *, archived: bool = True) -> None:
        """Close the tunnel's client connections (after it was archived)."""
        code = CLOSE_ARCHIVED if archived else CLOSE_GOING_AWAY
        for conn in list(self._connections.get(tunnel_id, [])):
            await conn.close(code, "tunnel archived" if archived else "closing")

    async def aclose(self) -> None:
        """Close every client connection (server shutdown)."""
        self._closing = True
        for tunnel_id in list(self._connections):
            await self.disconnect(tunnel_id, archived=False)


async def _chunks(request: httpx2.Request) -> AsyncIterator[bytes]:
    body = request.stream
    if isinstance(body, httpx2.AsyncByteStream):
        async for chunk in body:
            yield chunk
    else:
        for chunk in body:
            yield chunk


def _bearer(websocket: WebSocket) -> str | None:
    auth = websocket.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
