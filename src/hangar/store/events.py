"""The append-only event log: one row per event, numbered by a per-session sequence.

Appends happen inside the caller's write transaction (``append``) so that an event and the state
change it announces (a status, usage) commit together; readers page by sequence number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hangar.errors import InvalidRequest
from hangar.ids import new_id
from hangar.store.db import Conn, Database, now_us
from hangar.store.prepared import Prepared, literal_in
from hangar.store.schema import events, sessions
from hangar.wire.common import ts

BATCH = 32
"""Rows per multi-row statement (inserts, marking input consumed)."""
JSON_ROWS_FROM = 4
"""On PostgreSQL, more event rows than this are inserted from one JSON parameter."""

USER_INPUT_TYPES = (
    "user.message",
    "user.tool_confirmation",
    "user.custom_tool_result",
    "user.tool_result",
    "user.define_outcome",
    "system.message",
)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    id: str
    type: str
    thread_id: str | None
    created_at: int
    processed_at: int | None
    data: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        """The event as the API shows it."""
        return {**self.data, "id": self.id, "type": self.type, "processed_at": ts(self.processed_at)}


def stored_event(m: Mapping[Any, Any], prefix: str = "") -> StoredEvent:
    """An event from a result row's mapping whose event columns are named ``<prefix><column>``."""
    return StoredEvent(
        seq=m[f"{prefix}seq"],
        id=m[f"{prefix}id"],
        type=m[f"{prefix}type"],
        thread_id=m[f"{prefix}thread_id"],
        created_at=m[f"{prefix}created_at"],
        processed_at=m[f"{prefix}processed_at"],
        data=m[f"{prefix}data"],
    )


def _stored(row: sa.Row[Any]) -> StoredEvent:
    return stored_event(row._mapping)


def history_key_of(seq: int) -> int:
    """The conversation position of an event appended already processed."""
    return 2 * seq


def history_key_after(seq: int) -> int:
    """The conversation position of input taken in right after event ``seq``."""
    return 2 * seq + 1


def pending_input() -> sa.ColumnElement[bool]:
    """Client input the loop has not consumed yet (the partial index ``ix_events_pending``)."""
    return sa.and_(events.c.processed_at.is_(None), literal_in(events.c.type, USER_INPUT_TYPES))


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type, body (without id/type/processed_at) and processing time."""

    type: str
    data: dict[str, Any]
    processed: bool = True
    thread_id: str | None = None
    id: str | None = None


def _encode_seq_cursor(seq: int, order: str) -> str:
    return f"{order[0]}{seq}"


def _decode_seq_cursor(token: str, order: str) -> int:
    if len(token) < 2 or token[0] not in "ad" or not token[1:].isdigit():
        raise InvalidRequest("invalid page cursor")
    if token[0] != order[0]:
        raise InvalidRequest("page token order does not match request")
    return int(token[1:])


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The hot statements (see hangar.store.prepared).
        self._inserts: dict[int, Prepared] = {}
        self._insert_json: Prepared | None = None
        if db.dialect == "postgresql":
            columns = ", ".join(c.name for c in events.columns)
            self._insert_json = Prepared(
                sa.text(
                    f"INSERT INTO events ({columns}) SELECT {columns} "  # noqa: S608 (column names)
                    "FROM json_populate_recordset(NULL::events, CAST(:rows AS json))"
                )
            )
        self._marks: dict[int, Prepared] = {}
        self._pending = Prepared(
            sa.select(events)
            .where(events.c.session_id == sa.bindparam("sid"), pending_input())
            .order_by(events.c.seq)
        )
        self._history: dict[tuple[str, ...], Prepared] = {}
        self._pages: dict[tuple[Any, ...], Prepared] = {}
        self._after = Prepared(
            sa.select(events)
            .where(events.c.session_id == sa.bindparam("sid"), events.c.seq > sa.bindparam("seq"))
            .order_by(events.c.seq)
            .limit(sa.bindparam("lim", type_=sa.Integer))
        )

    async def append(
        self, conn: Conn, session_id: str, new: list[NewEvent], *, at: int | None = None
    ) -> list[StoredEvent]:
        """Append events inside an open write transaction, reading and advancing the session's
        sequence counter itself; returns them with ids and sequence numbers."""
        if not new:
            return []
        last = await conn.scalar(
            self.db.for_update(sa.select(sessions.c.last_seq).where(sessions.c.id == session_id))
        )
        if last is None:
            raise LookupError(session_id)
        out = await self.insert(conn, session_id, new, after_seq=last, at=at)
        await conn.execute(
            sessions.update().where(sessions.c.id == session_id).values(last_seq=last + len(new))
        )
        return out

    async def insert(
        self, conn: Conn, session_id: str, new: list[NewEvent], *, after_seq: int, at: int | None = None
    ) -> list[StoredEvent]:
        """Insert events numbered from ``after_seq + 1``; the caller advances ``sessions.last_seq``
        in the same transaction (the journal does, together with the state change)."""
        at = at or now_us()
        out: list[StoredEvent] = []
        rows: list[dict[str, Any]] = []
        for offset, ev in enumerate(new, start=1):
            stored = StoredEvent(
                seq=after_seq + offset,
                id=ev.id or new_id("event"),
                type=ev.type,
                thread_id=ev.thread_id,
                created_at=at,
                processed_at=at if ev.processed else None,
                data=ev.data,
            )
            out.append(stored)
            rows.append(
                {
                    "session_id": session_id,
                    "seq": stored.seq,
                    "id": stored.id,
                    "type": stored.type,
                    "thread_id": stored.thread_id,
                    "created_at": stored.created_at,
                    "processed_at": stored.processed_at,
                    "history_key": history_key_of(stored.seq) if ev.processed else None,
                    "data": stored.data,
                }
            )
        if self._insert_json is not None and len(rows) > JSON_ROWS_FROM:
            # One parameter, a JSON array of the rows, instead of nine a row: binding 50 events
            # one value at a time cost the server ~1 ms of Python (psycopg quotes each).
            await conn.defer(self._insert_json, {"rows": json.dumps(rows, separators=(",", ":"))})
            return out
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            params = {f"{k}_{i}": v for i, row in enumerate(chunk) for k, v in row.items()}
            await conn.defer(self._insert_rows(len(chunk)), params)
        return out

    def _insert_rows(self, n: int) -> Prepared:
        """``INSERT … VALUES (…), (…)`` of ``n`` rows: one statement, one round trip (a driver's
        ``executemany`` is one round trip per row, or a pipeline that costs more than that)."""
        found = self._inserts.get(n)
        if found is None:
            columns = [c.name for c in events.columns]
            rows = [{c: sa.bindparam(f"{c}_{i}", type_=events.c[c].type) for c in columns} for i in range(n)]
            found = self._inserts[n] = Prepared(events.insert().values(rows))
        return found

    async def mark_processed(
        self, conn: Conn, session_id: str, seqs: list[int], *, at: int, after_seq: int
    ) -> None:
        """Consume queued input: it joins the conversation after event ``after_seq``."""
        if not seqs:
            return
        key = history_key_after(after_seq)
        for start in range(0, len(seqs), BATCH):
            chunk = seqs[start : start + BATCH]
            params = {"sid": session_id, "at": at, "key": key} | {f"s_{i}": s for i, s in enumerate(chunk)}
            await conn.defer(self._mark_rows(len(chunk)), params)

    def _mark_rows(self, n: int) -> Prepared:
        found = self._marks.get(n)
        if found is None:
            seqs = [sa.bindparam(f"s_{i}", type_=sa.BigInteger) for i in range(n)]
            found = self._marks[n] = Prepared(
                events.update()
                .where(
                    events.c.session_id == sa.bindparam("sid"),
                    events.c.seq.in_(seqs),
                    events.c.processed_at.is_(None),
                )
                .values(processed_at=sa.bindparam("at"), history_key=sa.bindparam("key"))
            )
        return found

    async def pending(self, session_id: str) -> list[StoredEvent]:
        """Client inputs not yet consumed by the loop, oldest first."""
        async with self.db.read() as conn:
            return [_stored(r) for r in (await conn.run(self._pending, {"sid": session_id})).all()]

    async def history(
        self, session_id: str, types: tuple[str, ...], after_key: int = -1
    ) -> list[tuple[int, StoredEvent]]:
        """Consumed events of ``types`` in conversation order, with their ``history_key``."""
        prepared = self._history.get(types)
        if prepared is None:
            prepared = self._history[types] = Prepared(
                sa.select(events)
                .where(
                    events.c.session_id == sa.bindparam("sid"),
                    literal_in(events.c.type, types),
                    events.c.history_key > sa.bindparam("key"),
                )
                .order_by(events.c.history_key, events.c.seq)
            )
        async with self.db.read() as conn:
            rows = (await conn.run(prepared, {"sid": session_id, "key": after_key})).all()
        return [(r._mapping["history_key"], _stored(r)) for r in rows]

    async def last_of_types(self, session_id: str, types: tuple[str, ...]) -> StoredEvent | None:
        stmt = (
            sa.select(events)
            .where(events.c.session_id == session_id, events.c.type.in_(types))
            .order_by(events.c.seq.desc())
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        return _stored(row) if row is not None else None

    async def after(self, session_id: str, seq: int, limit: int = 500) -> list[StoredEvent]:
        """Events with a sequence number above ``seq``, in order (stream catch-up)."""
        params = {"sid": session_id, "seq": seq, "lim": limit}
        async with self.db.read() as conn:
            return [_stored(r) for r in (await conn.run(self._after, params)).all()]

    async def seq_of(self, session_id: str, event_id: str) -> int | None:
        async with self.db.read() as conn:
            seq = await conn.scalar(
                sa.select(events.c.seq).where(events.c.session_id == session_id, events.c.id == event_id)
            )
        return int(seq) if seq is not None else None

    async def get(self, session_id: str, event_id: str) -> StoredEvent | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(events).where(events.c.session_id == session_id, events.c.id == event_id)
                )
            ).first()
        return _stored(row) if row is not None else None

    async def page(
        self,
        session_id: str,
        *,
        types: list[str],
        thread_id: str | None = None,
        processed_range: dict[str, int],
        order: str,
        limit: int,
        page: str | None,
    ) -> tuple[list[StoredEvent], str | None]:
        shape = (tuple(types), thread_id is not None, tuple(sorted(processed_range)), order, page is not None)
        prepared = self._pages.get(shape)
        if prepared is None:
            prepared = self._page_statement(*shape)
            if len(self._pages) < 256:  # the shapes clients use; others are compiled each time
                self._pages[shape] = prepared
        params: dict[str, Any] = {"sid": session_id, "lim": limit + 1, "thread": thread_id}
        params |= {f"p_{op}": value for op, value in processed_range.items()}
        if page:
            params["bound"] = _decode_seq_cursor(page, order)
        async with self.db.read() as conn:
            rows = [_stored(r) for r in (await conn.run(prepared, params)).all()]
        more = len(rows) > limit
        rows = rows[:limit]
        next_page = _encode_seq_cursor(rows[-1].seq, order) if more and rows else None
        return rows, next_page

    @staticmethod
    def _page_statement(
        types: tuple[str, ...], by_thread: bool, range_ops: tuple[str, ...], order: str, paged: bool
    ) -> Prepared:
        stmt = sa.select(events).where(events.c.session_id == sa.bindparam("sid"))
        if types:
            stmt = stmt.where(literal_in(events.c.type, types))  # validated event type names
        if by_thread:
            stmt = stmt.where(events.c.thread_id == sa.bindparam("thread"))
        ops = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
        for op in range_ops:
            stmt = stmt.where(
                getattr(events.c.processed_at, ops[op])(sa.bindparam(f"p_{op}", type_=sa.BigInteger))
            )
        if paged:
            bound = sa.bindparam("bound", type_=sa.BigInteger)
            stmt = stmt.where(events.c.seq > bound if order == "asc" else events.c.seq < bound)
        ordering = events.c.seq.asc() if order == "asc" else events.c.seq.desc()
        return Prepared(stmt.order_by(ordering).limit(sa.bindparam("lim", type_=sa.Integer)))

    async def delete_session(self, conn: Conn, session_id: str) -> None:
        await conn.execute(events.delete().where(events.c.session_id == session_id))
