"""Write events and the state they announce in one transaction, then publish them.

Every state change of a session goes through the journal: the event rows and the session row
commit together, and only committed events reach the bus, so a stream never shows an event that
a crash could take back. A transaction reads (and on PostgreSQL locks) the session row once,
inserts its events, and writes the session row once at the end.

On PostgreSQL, ``Journal.run`` spares the read when this process wrote the session last: it
builds the transaction on the row as that write left it, and a guard sent ahead of the
transaction's writes checks that the row is still that version while it locks it (its
``xmin``, which any writer changes). If the row changed meanwhile (another process, a write
outside the journal) the guard aborts the transaction and the body runs again on the row read
with its lock. A journal transaction is then one round trip instead of two.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from hangar.errors import ApiError, NotFound
from hangar.store import Store
from hangar.store.bus import EventBus
from hangar.store.db import Conn, Later, RowChanged, now_us
from hangar.store.events import (
    USER_INPUT_TYPES,
    NewEvent,
    StoredEvent,
    history_key_after,
    history_key_of,
)
from hangar.store.sessions import SessionRecord

T = TypeVar("T")


@dataclass
class Tx:
    conn: Conn
    store: Store
    session: SessionRecord
    at: int
    pending: list[StoredEvent]  # the session's unconsumed client input when the transaction began
    has_resources: bool
    version: str | None  # the row's version the transaction is built on (PostgreSQL)
    appended: list[StoredEvent] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    consumed: list[tuple[int, StoredEvent]] = field(default_factory=list)  # (history_key, input)
    _written: Later | None = None

    @property
    def last_seq(self) -> int:
        return self.appended[-1].seq if self.appended else self.session.last_seq

    async def append(self, *events: NewEvent) -> list[StoredEvent]:
        stored = await self.store.events.insert(
            self.conn, self.session.id, list(events), after_seq=self.last_seq, at=self.at
        )
        self.appended.extend(stored)
        return stored

    async def consume(self, inputs: list[StoredEvent]) -> None:
        """Take client input in: it joins the conversation here (after the events appended so
        far), and is no longer pending."""
        if not inputs:
            return
        after = self.last_seq
        await self.store.events.mark_processed(
            self.conn, self.session.id, [e.seq for e in inputs], at=self.at, after_seq=after
        )
        self.consumed += [(history_key_after(after), e) for e in inputs]

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
        # Consuming input writes the row too: a copy of it that lists the input as pending
        # must fail its guard (``Journal.run``).
        if not self.appended and not self.changes and not self.consumed:
            return
        values: dict[str, Any] = {"updated_at": self.at, **self.changes}
        if self.appended:
            values["last_seq"] = self.last_seq
        self._written = await self.store.sessions.set_row(self.conn, self.session.id, values)

    def outcome(self) -> Known:
        """After the commit: the row as this transaction left it, its version, its queued input."""
        taken = {e.seq for _, e in self.consumed}
        added = [e for e in self.appended if e.processed_at is None and e.type in USER_INPUT_TYPES]
        pending = tuple(e for e in (*self.pending, *added) if e.seq not in taken)
        if self._written is None:
            return Known(self.session, self.version, pending, self.has_resources)
        row = self._written.result.first() if self._written.result is not None else None
        version = row._mapping["row_version"] if row is not None else None
        changed = replace(self.session, last_seq=self.last_seq, updated_at=self.at, **self.changes)
        return Known(changed, version, pending, self.has_resources)

    def history(self) -> list[tuple[int, StoredEvent]]:
        """What this transaction added to the conversation: input it took in and the events it
        appended already processed, with their ``history_key``, in conversation order."""
        appended = [(history_key_of(e.seq), e) for e in self.appended if e.processed_at is not None]
        return sorted([*self.consumed, *appended], key=lambda item: (item[0], item[1].seq))


@dataclass(frozen=True)
class Known:
    """A session row as this process last committed or read it with its lock."""

    session: SessionRecord
    version: str | None  # PostgreSQL's xmin; None on SQLite
    pending: tuple[StoredEvent, ...]  # its unconsumed client input
    has_resources: bool


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class Journal:
    def __init__(self, store: Store, bus: EventBus, *, remember: int = 256) -> None:
        self.store = store
        self.bus = bus
        # The rows this process committed last (a bounded LRU): what `run` builds on when they
        # have a version (PostgreSQL; SQLite rows have none, and its locked read is in-process).
        # Records are never mutated (transactions copy `data` before changing it).
        self._remember = remember
        self._known: OrderedDict[str, Known] = OrderedDict()
        # This process's journal transactions of one session take turns (they would queue on
        # the row's lock anyway), so each one starts from the row the one before left.
        self._turns: dict[str, _Turn] = {}
        self.listeners: list[Callable[[Tx], None]] = []  # called with each committed transaction

    def last_seq(self, session_id: str) -> int | None:
        """The session's ``last_seq`` as this process's newest transaction of it left it, if
        it is remembered. Current unless another process or a write outside the journal has
        appended since: callers rely on it right after a transaction of their own."""
        known = self._known.get(session_id)
        return known.session.last_seq if known is not None else None

    async def run(
        self,
        session_id: str,
        body: Callable[[Tx], Awaitable[T]],
        workspace_id: str | None = None,
        *,
        durable: bool = True,
    ) -> T:
        """``body(tx)`` in a journal transaction (see ``transaction``), its events published
        once committed.

        ``body`` may run twice: optimistically on the row this process wrote last, and again
        on the row read with its lock if the guard finds it changed or ``body`` raised an API
        error (which the stored row may not bear out). So it must have no effect outside
        ``tx`` until it returns; reads are fine."""
        async with self._turn(session_id):
            known = self._known.get(session_id)
            if (
                known is not None
                and known.version is not None
                and workspace_id in (None, known.session.workspace_id)
            ):
                try:
                    async with self.store.db.write(durable=durable) as conn:
                        await self.store.sessions.expect(conn, session_id, known.version)
                        tx = Tx(
                            conn,
                            self.store,
                            known.session,
                            now_us(),
                            list(known.pending),
                            known.has_resources,
                            known.version,
                        )
                        result = await body(tx)
                        await tx.flush()
                except (RowChanged, ApiError):
                    self._known.pop(session_id, None)
                else:
                    self._committed(tx)
                    return result
            async with self._locked(session_id, workspace_id, durable) as tx:
                result = await body(tx)
            self._committed(tx)
            return result

    @asynccontextmanager
    async def transaction(
        self, session_id: str, workspace_id: str | None = None, *, durable: bool = True
    ) -> AsyncIterator[Tx]:
        """A journal transaction on the session's row, read with its lock together with its
        unconsumed client input (``Tx.pending``) and whether it has resources. ``durable=False``
        is for the loop's own transitions: nobody waits on them, and if a database crash lost
        the newest ones the session would resume from the one before (the events and the
        session row commit together). Client writes stay durable."""
        async with self._turn(session_id):
            async with self._locked(session_id, workspace_id, durable) as tx:
                yield tx
            self._committed(tx)

    @asynccontextmanager
    async def _turn(self, session_id: str) -> AsyncIterator[None]:
        turn = self._turns.get(session_id)
        if turn is None:
            turn = self._turns[session_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[session_id]

    @asynccontextmanager
    async def _locked(self, session_id: str, workspace_id: str | None, durable: bool) -> AsyncIterator[Tx]:
        async with self.store.db.write(durable=durable) as conn:
            locked = await self.store.sessions.get_locked_with_pending(conn, session_id)
            if locked is None or workspace_id not in (None, locked.session.workspace_id):
                raise NotFound(f"Session {session_id} not found.")
            tx = Tx(
                conn,
                self.store,
                locked.session,
                now_us(),
                locked.pending,
                locked.has_resources,
                locked.version,
            )
            yield tx
            await tx.flush()

    def _committed(self, tx: Tx) -> None:
        session_id = tx.session.id
        self._known[session_id] = tx.outcome()
        self._known.move_to_end(session_id)
        while len(self._known) > self._remember:
            self._known.popitem(last=False)
        for listener in self.listeners:
            listener(tx)
        if tx.appended:
            self.bus.publish(session_id, tx.appended)
