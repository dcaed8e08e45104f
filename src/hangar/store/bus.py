"""Fan-out of committed events to live streams, inside one server process.

The event log in the database is the source of truth; the bus only tells subscribers that
something new was committed, carrying the events to spare them a query. Each subscriber has a
bounded queue: a slow reader never blocks the publisher or other readers. When its queue is
full the subscriber is marked *lagged* and its queue is cleared; the stream then catches up
from the log by sequence number, so nothing is lost and nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hangar.store.events import StoredEvent


@dataclass(frozen=True)
class Preview:
    """An ephemeral stream-only item (``event_start`` / ``event_delta``), never persisted."""

    kind: str  # the previewed event type, e.g. "agent.message"
    payload: dict[str, Any]


@dataclass(frozen=True)
class Closed:
    """The session is gone: streams send a final ``session.deleted`` (this id and time) and close."""

    event_id: str
    at: int


Item = StoredEvent | Preview | Closed


@dataclass(eq=False)
class Subscription:
    session_id: str
    maxsize: int
    queue: asyncio.Queue[Item] = field(init=False)
    lagged: bool = False
    wants_previews: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize)

    def offer(self, item: Item) -> None:
        if isinstance(item, Preview) and item.kind not in self.wants_previews:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, Preview):
                return  # previews are best-effort
            self.lagged = True
            while not self.queue.empty():
                self.queue.get_nowait()
            if isinstance(item, Closed):
                self.queue.put_nowait(item)


class EventBus:
    def __init__(self, queue_size: int = 1024) -> None:
        self.queue_size = queue_size
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)

    @contextmanager
    def subscribe(self, session_id: str, previews: frozenset[str] = frozenset()) -> Iterator[Subscription]:
        sub = Subscription(session_id, self.queue_size, wants_previews=previews)
        self._subs[session_id].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[session_id]

    def publish(self, session_id: str, items: Sequence[Item]) -> None:
        for sub in tuple(self._subs.get(session_id, ())):
            for item in items:
                sub.offer(item)

    def wants_previews(self, session_id: str, kind: str) -> bool:
        return any(kind in s.wants_previews for s in self._subs.get(session_id, ()))

    def subscriber_count(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))
