"""The machinery the fake upstream servers share: a Starlette app run by uvicorn in a background
thread on a free loopback port, a queue of scripted replies, request recording and the
server-sent-event loop with its stall / truncate / disconnect bookkeeping.

Each fake (:mod:`hangar.testing.fake_anthropic`, :mod:`hangar.testing.fake_openai`) subclasses
:class:`FakeServer` and keeps only its wire format: its route, its reply type, its error envelope
and how a reply becomes JSON or SSE frames.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["FakeServer", "RecordedRequest", "StreamedReply", "split_text"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: dict[str, Any]


class StreamedReply(Protocol):
    """What :meth:`FakeServer._stream` needs of a scripted reply."""

    stall: bool
    """Send the first frame and then nothing until the client goes away."""
    delay_s: float
    """Pause between frames."""


ReplyT = TypeVar("ReplyT", bound=StreamedReply)


def split_text(text: str, size: int) -> list[str]:
    """``text`` in pieces of ``size`` characters (at least one character each)."""
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


class FakeServer(ABC, Generic[ReplyT]):
    """A fake upstream API, run by uvicorn in a background thread on a free loopback port.

    Replies are served in order, one per request to the subclass's route; with the queue empty
    the subclass's :meth:`_default_reply` answers. Every such request is recorded in
    :attr:`requests`.
    """

    _thread_name: ClassVar[str] = "fake-server"
    _url_suffix: ClassVar[str] = ""
    """Appended to ``http://host:port`` in :attr:`base_url` (e.g. ``/v1``)."""

    def __init__(self, routes: list[Route]) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[ReplyT] = collections.deque()
        self._ids = itertools.count(1)
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        """Streams whose client went away before the end (a cancelled consumer)."""
        self.completed = 0
        """Streams sent to the end."""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        catch_all = Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        self.app = Starlette(routes=[*routes, catch_all])

    # -- wire format (subclasses)

    @abstractmethod
    def _default_reply(self) -> ReplyT:
        """The reply served when the queue is empty."""

    @abstractmethod
    async def _not_found(self, request: Request) -> Response:
        """The answer to any other path, in the upstream's error envelope."""

    # -- lifecycle

    @property
    def base_url(self) -> str:
        if self._socket is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}{self._url_suffix}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self._thread_name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- scripting

    def enqueue(self, *replies: ReplyT) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.disconnects = self.completed = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
            time.sleep(0.005)

    # -- HTTP

    async def _take(self, request: Request) -> tuple[dict[str, Any], ReplyT, int]:
        """Record ``request`` and pop the next reply: ``(JSON body, reply, serial number from 1)``."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body
                )
            )
            reply = self._queue.popleft() if self._queue else self._default_reply()
            n = next(self._ids)
        return body, reply, n

    async def _stream(
        self, reply: ReplyT, frames: Iterable[bytes | None], request: Request
    ) -> AsyncIterator[bytes]:
        """Send ``frames``; a ``None`` frame stalls (``reply.stall``) or ends the stream early.

        Counts the stream in :attr:`completed` or, when the client went away first, in
        :attr:`disconnects`.
        """
        finished = False
        try:
            for frame in frames:
                if frame is None:  # stall / truncate marker
                    if reply.stall:
                        while (await request.receive())["type"] != "http.disconnect":
                            pass
                    else:
                        finished = True
                    return
                yield frame
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
            finished = True
        finally:
            with self._lock:
                if finished:
                    self.completed += 1
                else:
                    self.disconnects += 1
