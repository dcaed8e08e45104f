"""``hangar tunnel``: the client that runs inside a private network and relays Hangar's MCP traffic
to the MCP servers there.

It dials **out** to Hangar (a WebSocket to ``/v1/tunnels/connect``, authenticated by the tunnel
token; no inbound port), then serves the HTTP exchanges Hangar multiplexes over it (see
:mod:`hangar.tunnel.protocol`): each request names a route, ``files`` for
``https://files.<tunnel domain>/mcp``, and goes to that route's private base URL, its body and
its response streamed both ways (MCP's SSE responses stay open as long as the server keeps
them). ``https://`` routes are verified against the tunnel's registered CA certificates, which
Hangar sends on connect and whenever they change.

A lost connection is dialled again with exponential backoff (0.5 s doubling to ``max_backoff_s``,
with jitter); requests in flight on it are aborted. A token Hangar does not accept (never valid,
rotated out, or its tunnel archived) ends :meth:`TunnelClient.run` with :class:`TunnelRejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from hangar import __version__
from hangar.tunnel.protocol import (
    CHUNK_BYTES,
    CONNECT_PATH,
    FATAL_CLOSE_CODES,
    HOP_BY_HOP,
    Kind,
    ProtocolError,
    end_to_end,
    frame,
    header_pairs,
    json_frame,
    load_json,
    parse_frame,
)

__all__ = ["Route", "TunnelClient", "TunnelRejected", "parse_route"]

log = logging.getLogger(__name__)

UPSTREAM_CONNECT_TIMEOUT_S = 10.0


class TunnelRejected(Exception):
    """Hangar refused the token (unknown, rotated out, or the tunnel is archived)."""


@dataclass(frozen=True)
class Route:
    """``name`` (the subdomain label Hangar's URLs use) → a private base URL."""

    name: str
    url: httpx2.URL

    def target(self, path_and_query: str) -> httpx2.URL:
        base = self.url.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        return self.url.copy_with(raw_path=(base + path_and_query).encode("ascii"))


def parse_route(spec: str) -> Route:
    """``name=http://host:port[/prefix]`` → :class:`Route` (``ValueError`` saying what is wrong)."""
    name, sep, url = spec.partition("=")
    name = name.strip().lower()
    if not sep or not name or not url.strip():
        raise ValueError(f"route {spec!r}: expected <name>=<http://host:port>")
    if not all(part and part.replace("-", "").isalnum() for part in name.split(".")):
        raise ValueError(f"route {spec!r}: the name must be a DNS label (letters, digits, '-')")
    try:
        parsed = httpx2.URL(url.strip())
    except httpx2.InvalidURL as exc:
        raise ValueError(f"route {spec!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"route {spec!r}: the target must be an http:// or https:// URL")
    if parsed.query or parsed.fragment:
        raise ValueError(f"route {spec!r}: the target must not have a query or fragment")
    return Route(name, parsed)


def connect_url(server: str) -> str:
    """Hangar's base URL → the WebSocket URL the client dials."""
    url = httpx2.URL(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(url.scheme)
    if scheme is None or not url.host:
        raise ValueError(f"server {server!r}: expected Hangar's http:// or https:// base URL")
    path = url.path.rstrip("/") + CONNECT_PATH
    return str(url.copy_with(scheme=scheme, path=path, query=None, fragment=None))


class TunnelClient:
    def __init__(
        self,
        server: str,
        token: str,
        routes: Sequence[Route],
        *,
        max_backoff_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = connect_url(server)
        self._token = token
        self.routes = {r.name: r for r in routes}
        if len(self.routes) != len(routes):
            raise ValueError("two routes have the same name")
        self.max_backoff_s = max_backoff_s
        self.open_timeout_s = open_timeout_s
        self.connects = 0

    async def run(self) -> None:
        """Stay connected until cancelled; raises :class:`TunnelRejected`."""
        failures = 0
        while True:
            try:
                hello = await self._connect_once()
            except TunnelRejected:
                raise
            except (OSError, TimeoutError, WebSocketException) as exc:
                hello = False
                log.warning("tunnel connection to %s failed: %s", self.url, _describe(exc))
            failures = 0 if hello else failures + 1
            delay = min(self.max_backoff_s, 0.5 * 2 ** max(failures - 1, 0)) * random.uniform(0.5, 1.0)
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> bool:
        """One connection, until it ends; whether Hangar said hello on it."""
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=f"hangar-tunnel/{__version__}",
                open_timeout=self.open_timeout_s,
                max_size=4 * CHUNK_BYTES,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise TunnelRejected(
                    f"Hangar refused the tunnel token (HTTP {exc.response.status_code})"
                ) from exc
            raise
        session = _Session(ws, self.routes)
        try:
            await session.run()
        finally:
            await session.aclose()
        if ws.close_code in FATAL_CLOSE_CODES:
            raise TunnelRejected(f"Hangar closed the tunnel: {ws.close_reason or ws.close_code}")
        if session.hello:
            self.connects += 1
        log.warning("tunnel connection closed (%s %s)", ws.close_code, ws.close_reason)
        return session.hello


class _Closed(Exception):
    """The WebSocket went away."""


class _Session:
    """One WebSocket connection and the upstream requests it carries."""

    def __init__(self, ws: ClientConnection, routes: dict[str, Route]) -> None:
        self.ws = ws
        self.routes = routes
        self.hello = False
        self._send_lock = asyncio.Lock()
        self._streams: dict[int, tuple[asyncio.Task[None], asyncio.Queue[bytes | None]]] = {}
        self._plain = httpx2.AsyncClient(timeout=_upstream_timeout(), follow_redirects=False, trust_env=False)
        self._tls: httpx2.AsyncClient | None = None

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    await self._control(json.loads(message))
                else:
                    self._stream_frame(*parse_frame(message))
        except ConnectionClosed:
            pass
        except (ProtocolError, json.JSONDecodeError) as exc:
            log.error("Hangar broke the tunnel protocol: %s", exc)
            await self.ws.close(1002, "protocol error")

    async def aclose(self) -> None:
        tasks = [task for task, _ in self._streams.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()
        await self.ws.close()

    async def _control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            self.hello = True
            log.info(
                "connected: tunnel %s, domain %s; routes %s",
                message.get("tunnel_id"),
                message.get("domain"),
                ", ".join(f"{n} -> {r.url}" for n, r in sorted(self.routes.items())),
            )
        if kind in ("hello", "certificates"):
            pems = [p for p in message.get("ca_certificates", []) if isinstance(p, str)]
            old, self._tls = self._tls, _tls_client(pems)
            if old is not None:
                await old.aclose()

    def _stream_frame(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        if kind is Kind.HEAD:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            task = asyncio.create_task(self._relay(stream_id, load_json(payload), queue))
            self._streams[stream_id] = (task, queue)
            return
        found = self._streams.get(stream_id)
        if found is None:
            return  # finished meanwhile
        task, queue = found
        if kind is Kind.DATA:
            queue.put_nowait(payload)
        elif kind is Kind.END:
            queue.put_nowait(None)
        elif kind is Kind.CANCEL:
            task.cancel()
        else:
            raise ProtocolError(f"Hangar may not send {kind.name} frames")

    async def _send(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self.ws.send(data)
        except ConnectionClosed as exc:
            raise _Closed from exc

    async def _error(self, stream_id: int, message: str, *, reached: bool) -> None:
        await self._send(json_frame(stream_id, Kind.ERROR, {"message": message, "reached": reached}))

    async def _relay(self, stream_id: int, head: dict[str, Any], body: asyncio.Queue[bytes | None]) -> None:
        try:
            await self._relay_inner(stream_id, head, body)
        except _Closed:
            pass
        except ProtocolError as exc:
            log.error("bad request head from Hangar: %s", exc)
            with contextlib.suppress(_Closed):
                await self._error(stream_id, "malformed request", reached=False)
        finally:
            self._streams.pop(stream_id, None)

    async def _relay_inner(
        self, stream_id: int, head: dict[str, Any], body: asyncio.Queue[bytes | None]
    ) -> None:
        name, target, method = head.get("route"), head.get("target"), head.get("method")
        if not (isinstance(name, str) and isinstance(target, str) and isinstance(method, str)):
            raise ProtocolError("route, target and method must be strings")
        route = self.routes.get(name)
        if route is None:
            await self._error(stream_id, f"the tunnel client has no route named {name!r}", reached=False)
            return
        client = self._tls if route.url.scheme == "https" else self._plain
        if client is None:
            await self._error(stream_id, "no CA certificate to verify https routes with", reached=False)
            return
        headers = [(k, v) for k, v in header_pairs(head.get("headers", [])) if k.lower() not in HOP_BY_HOP]
        content = _drain(body) if head.get("body") else None
        request = client.build_request(method, route.target(target), headers=headers, content=content)
        try:
            response = await client.send(request, stream=True)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.UnsupportedProtocol) as exc:
            log.warning("route %s: cannot reach %s: %s", name, route.url, _describe(exc))
            await self._error(stream_id, f"route {name!r}: {_describe(exc)}", reached=False)
            return
        except httpx2.TransportError as exc:
            await self._error(stream_id, f"route {name!r}: {_describe(exc)}", reached=True)
            return
        try:
            head_out = {"status": response.status_code, "headers": end_to_end(list(response.headers.raw))}
            await self._send(json_frame(stream_id, Kind.RESPONSE, head_out))
            async for chunk in response.aiter_raw():
                for start in range(0, len(chunk), CHUNK_BYTES):
                    await self._send(frame(stream_id, Kind.DATA, chunk[start : start + CHUNK_BYTES]))
            await self._send(frame(stream_id, Kind.END))
        except httpx2.TransportError as exc:
            await self._error(stream_id, f"route {name!r}: {_describe(exc)}", reached=True)
        finally:
            await response.aclose()


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not None:
        yield chunk


def _upstream_timeout() -> httpx2.Timeout:
    # No read timeout: MCP's SSE streams stay open; Hangar bounds the wait on its side.
    return httpx2.Timeout(UPSTREAM_CONNECT_TIMEOUT_S, read=None)


def _tls_client(pems: list[str]) -> httpx2.AsyncClient | None:
    if not pems:
        return None
    context = ssl.create_default_context(cadata="".join(pems))
    return httpx2.AsyncClient(
        verify=context, timeout=_upstream_timeout(), follow_redirects=False, trust_env=False
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx2.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx2.ConnectError):
        return f"connection failed ({exc})" if str(exc) else "connection failed"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
