"""Write events and the state they announce in one transaction, then publish them.

Every state change of a session goes through ``Journal.transaction``: the event rows and the
session row commit together, and only committed events reach the bus, so a stream never shows
an event that a crash could take back. A transaction reads (and on PostgreSQL locks) the
session row once, inserts its events, and writes the session row once at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from hangar.errors import NotFound
from hangar.store import Store
from hangar.store.bus import EventBus
from hangar.store.db import Conn, now_us
from hangar.store.events import NewEvent, StoredEvent
from hangar.store.sessions import SessionRecord


@dataclass
class Tx:
    conn: Conn
    store: Store
    session: SessionRecord
    at: int
    appended: list[StoredEvent] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    pending: list[StoredEvent] = field(default_factory=list)  # read when asked (`pending=True`)
    has_resources: bool | None = None  # known when `pending=True`

    @property
    def last_seq(self) -> int:
        return self.appended[-1].seq if self.appended else self.session.last_seq

    async def append(self, *events: NewEvent) -> list[StoredEvent]:
        stored = await self.store.events.insert(
            self.conn, self.session.id, list(events), after_seq=self.last_seq, at=self.at
        )
        self.appended.extend(stored)
        return stored

    def save(
        self, *, data: dict[str, Any] | None = None, status: str | None = None, archived_at: int | None = None
    ) -> None:
        """Stage changes to the session row; written once when the transaction ends."""
        if data is not None:
            self.changes["data"] = data
        if status is not None:
            self.changes["status"] = status
        if archived_at is not None:
            self.changes["archived_at"] = archived_at

    async def flush(self) -> None:
        if not self.appended and not self.changes:
            return
        values: dict[str, Any] = {"updated_at": self.at, **self.changes}
        if self.appended:
            values["last_seq"] = self.last_seq
        await self.store.sessions.set_row(self.conn, self.session.id, values)


class Journal:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    @asynccontextmanager
    async def transaction(
        self,
        session_id: str,
        workspace_id: str | None = None,
        *,
        durable: bool = True,
        pending: bool = False,
    ) -> AsyncIterator[Tx]:
        """``durable=False`` is for the loop's own transitions: nobody waits on them, and if a
        database crash lost the newest ones the session would resume from the one before (the
        events and the session row commit together). Client writes stay durable. ``pending``
        also reads the session's unconsumed client input (``Tx.pending``) and whether it has
        resources (``Tx.has_resources``) with the row (the loop's; ``workspace_id`` is not checked)."""
        async with self.store.db.write(durable=durable) as conn:
            queued: list[StoredEvent] = []
            has_resources: bool | None = None
            if pending:
                found = await self.store.sessions.get_locked_with_pending(conn, session_id)
                session, queued, has_resources = found
            else:
                session = await self.store.sessions.get_in(conn, workspace_id, session_id, lock=True)
            if session is None:
                raise NotFound(f"Session {session_id} not found.")
            tx = Tx(conn, self.store, session, now_us(), pending=queued, has_resources=has_resources)
            yield tx
            await tx.flush()
        if tx.appended:
            self.bus.publish(session_id, tx.appended)
