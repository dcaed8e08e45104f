"""The httpx2 transport of MCP connections (see :mod:`._wire` for what it does)."""

from __future__ import annotations

import httpx2

from hangar.runtime.mcp._wire import Auth, Observer

NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.UnsupportedProtocol)
"""Transport errors that mean the request never left this process."""


class AuthTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, auth: Auth, observer: Observer) -> None:
        self._inner = inner
        self._auth = auth
        self._observer = observer

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        is_call = _is_tool_call(request)
        await self._authorize(request)
        response = await self._send(request, is_call)
        hook = self._auth.on_unauthorized
        if response.status_code == 401 and hook is not None:
            await response.aclose()
            await hook()
            await self._authorize(request)
            response = await self._send(request, is_call)
        status = response.status_code
        self._observer.last_status = status
        if status in (401, 403):
            self._observer.denied_status = status
            self._observer.denials += 1
        elif is_call and status < 300:
            self._observer.calls_reached += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _authorize(self, request: httpx2.Request) -> None:
        factory = self._auth.headers_factory
        if factory is None:
            return
        headers = await factory()
        self._observer.remember(headers)
        for name, value in headers.items():
            request.headers[name] = value

    async def _send(self, request: httpx2.Request, is_call: bool) -> httpx2.Response:
        try:
            return await self._inner.handle_async_request(request)
        except NOT_SENT:
            raise
        except httpx2.TransportError:
            if is_call:  # the request may have been read by the server: it may have run
                self._observer.calls_reached += 1
            raise


def _is_tool_call(request: httpx2.Request) -> bool:
    if request.method != "POST":
        return False
    try:
        return b'"tools/call"' in request.content
    except httpx2.RequestNotRead:
        return True  # unknown: count it, which only ever makes a retry less likely
