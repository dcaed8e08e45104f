"""Write events and the state they announce in one transaction, then publish them.

Every state change of a session goes through ``Journal.transaction``: the event rows and the
session row commit together, and only committed events reach the bus, so a stream never shows
an event that a crash could take back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from hangar.errors import NotFound
from hangar.store import Store
from hangar.store.bus import EventBus
from hangar.store.db import now_us
from hangar.store.events import NewEvent, StoredEvent
from hangar.store.sessions import SessionRecord


@dataclass
class Tx:
    conn: AsyncConnection
    store: Store
    session: SessionRecord
    at: int
    appended: list[StoredEvent] = field(default_factory=list)

    async def append(self, *events: NewEvent) -> list[StoredEvent]:
        stored = await self.store.events.append(self.conn, self.session.id, list(events), at=self.at)
        self.appended.extend(stored)
        return stored

    async def save(self, *, data: dict[str, Any] | None = None, status: str | None = None,
                   archived_at: int | None = None) -> None:  # fmt: skip
        await self.store.sessions.save(
            self.conn, self.session.id, data=data, status=status, archived_at=archived_at, at=self.at
        )


class Journal:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    @asynccontextmanager
    async def transaction(self, session_id: str, workspace_id: str | None = None) -> AsyncIterator[Tx]:
        async with self.store.db.write() as conn:
            session = await self.store.sessions.get_in(conn, workspace_id, session_id, lock=True)
            if session is None:
                raise NotFound(f"Session {session_id} not found.")
            tx = Tx(conn, self.store, session, now_us())
            yield tx
        if tx.appended:
            self.bus.publish(session_id, tx.appended)
