"""Pure ASGI middleware: request ids, the request-body limit, and draining event streams.

Written as raw ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hangar.http.errors import error_body


def draining_event(app: Any) -> asyncio.Event:
    """The app's "shutting down" signal (created on first use, kept in ``app.state``).

    The server sets it when a graceful shutdown begins: open event streams then end cleanly
    (clients reconnect with ``Last-Event-ID``) instead of holding the shutdown until its timeout.
    """
    event: asyncio.Event | None = getattr(app.state, "draining", None)
    if event is None:
        event = asyncio.Event()
        app.state.draining = event
    return event


async def _drainable(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, draining: asyncio.Event
) -> None:
    """Run ``app``; if it is streaming ``text/event-stream`` when ``draining`` is set, stop it
    and end the response properly. Any other response is left to finish on its own."""
    streaming = asyncio.Event()

    async def watch(message: Message) -> None:
        if message["type"] == "http.response.start" and any(
            k == b"content-type" and v.startswith(b"text/event-stream") for k, v in message.get("headers", [])
        ):
            streaming.set()
        await send(message)

    async def draining_while_streaming() -> None:
        await draining.wait()
        await streaming.wait()

    task = asyncio.ensure_future(app(scope, receive, watch))
    stopper = asyncio.ensure_future(draining_while_streaming())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # re-raise what the app raised
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class RequestContext:
    """Gives every request a ``request-id`` header and enforces ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id
        header_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"request-id", header_id))
                message["headers"] = headers
            await send(message)

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send_with_id, request_id)
            return

        if scope["method"] == "GET" and "app" in scope:
            await _drainable(self.app, scope, receive, send_with_id, draining_event(scope["app"]))
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send_with_id)
            return
        # Buffer the (bounded) body so an oversized chunked upload is refused before any
        # handler runs, rather than failing half-way through one.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await self._too_large(send_with_id, request_id)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _too_large(self, send: Send, request_id: str) -> None:
        body = json.dumps(
            error_body(
                "request_too_large",
                f"Request body exceeds the limit of {self.max_body_bytes} bytes.",
                request_id,
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
