"""Server-sent event streams of a session's log.

Framing: ``id: <event id>``, ``event: <type>`` (the SDK drops frames without it), ``data: <json>``.
A new stream starts live from the moment of connection. Beyond the hosted API, a client that
reconnects with ``Last-Event-ID`` (or ``?after_id=<event id>``) first receives every event it
missed, in order, then continues live; sequence numbers make sure none arrives twice.

The stream subscribes to the bus *before* reading its starting point from the log, so no event
committed in between can slip through; anything the bus could not hold (a slow reader) is read
back from the log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from hangar.services import Services
from hangar.store.bus import Closed, Preview
from hangar.store.events import StoredEvent
from hangar.wire import events as ev
from hangar.wire.common import ts

CATCH_UP_BATCH = 500


def frame(event_type: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


PING = b"event: ping\ndata: {}\n\n"


async def event_stream(
    svc: Services,
    session_id: str,
    *,
    after_seq: int | None,
    previews: frozenset[str],
    include: Callable[[StoredEvent], bool] = lambda _e: True,
) -> AsyncIterator[bytes]:
    """Yield SSE frames for ``session_id`` until the session is deleted or the client leaves."""
    ping_every = svc.settings.sse_ping_interval_s
    with svc.bus.subscribe(session_id, previews) as sub:
        if after_seq is None:
            rec = await svc.store.sessions.get(None, session_id)
            if rec is None:
                return
            after_seq = rec.last_seq
        delivered = after_seq
        # Opening bytes: flush headers now so clients see the stream as connected.
        yield b": connected\n\n"

        async def catch_up() -> AsyncIterator[StoredEvent]:
            nonlocal delivered
            while True:
                batch = await svc.store.events.after(session_id, delivered, CATCH_UP_BATCH)
                for e in batch:
                    delivered = e.seq
                    yield e
                if len(batch) < CATCH_UP_BATCH:
                    return

        async for e in catch_up():
            if include(e):
                yield frame(e.type, e.wire(), e.id)
        while True:
            if sub.lagged:
                sub.lagged = False
                async for e in catch_up():
                    if include(e):
                        yield frame(e.type, e.wire(), e.id)
            try:
                first = await asyncio.wait_for(sub.queue.get(), timeout=ping_every)
            except TimeoutError:
                yield PING
                continue
            # Everything already queued goes out in one write.
            items = [first]
            while not sub.queue.empty():
                items.append(sub.queue.get_nowait())
            out: list[bytes] = []
            for item in items:
                if isinstance(item, Closed):
                    gone = {"id": item.event_id, "type": ev.SESSION_DELETED, "processed_at": ts(item.at)}
                    out.append(frame(ev.SESSION_DELETED, gone, item.event_id))
                    yield b"".join(out)
                    return
                if isinstance(item, Preview):
                    out.append(frame(item.payload["type"], item.payload))
                    continue
                if item.seq <= delivered:
                    continue
                if item.seq > delivered + 1:
                    # A gap: events committed by someone whose publish we have not seen yet,
                    # or dropped while lagged. The log has them.
                    async for e in catch_up():
                        if include(e):
                            out.append(frame(e.type, e.wire(), e.id))
                    continue
                delivered = item.seq
                if include(item):
                    out.append(frame(item.type, item.wire(), item.id))
            if out:
                yield b"".join(out)
