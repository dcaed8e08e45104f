"""Persistence of sessions, their threads and their resources."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hangar.crypto import SecretBox, sealed_key_id
from hangar.store.db import Conn, Database, Later, now_us
from hangar.store.events import StoredEvent, pending_input, stored_event
from hangar.store.paging import Order, Page, keyset_page
from hangar.store.prepared import Prepared
from hangar.store.schema import events, session_resources, sessions, threads


@dataclass(frozen=True)
class SessionRecord:
    id: str
    workspace_id: str
    agent_id: str
    agent_version: int
    environment_id: str
    status: str
    data: dict[str, Any]
    last_seq: int
    created_at: int
    updated_at: int
    archived_at: int | None


@dataclass(frozen=True)
class Locked:
    """A session row read with its lock by the journal (``get_locked_with_pending``)."""

    session: SessionRecord
    version: str | None
    pending: list[StoredEvent]
    has_resources: bool


@dataclass(frozen=True)
class ThreadRecord:
    id: str
    session_id: str
    parent_thread_id: str | None
    status: str
    data: dict[str, Any]
    created_at: int
    updated_at: int
    archived_at: int | None


def _session(row: sa.Row[Any]) -> SessionRecord:
    m = row._mapping
    return SessionRecord(**{f: m[f] for f in SessionRecord.__dataclass_fields__})


def _thread(row: sa.Row[Any]) -> ThreadRecord:
    m = row._mapping
    return ThreadRecord(**{f: m[f] for f in ThreadRecord.__dataclass_fields__})


def _resources_where(condition: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return (
        sa.select(session_resources.c.session_id, session_resources.c.data)
        .where(condition)
        .order_by(session_resources.c.created_at, session_resources.c.id)
    )


@dataclass(frozen=True)
class SessionFilter:
    agent_id: str | None = None
    agent_version: int | None = None
    statuses: tuple[str, ...] = ()
    include_archived: bool = False
    created: tuple[tuple[str, int], ...] = ()
    nothing: bool = False  # a filter no session can match (e.g. deployment_id)


def resource_aad(resource_id: str) -> bytes:
    """The associated data of a ``github_repository`` resource's sealed token: its row."""
    return f"session_resource:{resource_id}".encode()


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._status = Prepared(sa.select(sessions.c.status).where(sessions.c.id == sa.bindparam("id")))
        # A turn reads its session's resources (hangar.runtime.provision).
        self._resources_of = Prepared(_resources_where(session_resources.c.session_id == sa.bindparam("sid")))
        self._get: dict[tuple[bool, bool], Prepared] = {}
        for scoped in (False, True):
            for lock in (False, True):
                stmt = sa.select(sessions).where(sessions.c.id == sa.bindparam("id"))
                if scoped:
                    stmt = stmt.where(sessions.c.workspace_id == sa.bindparam("workspace_id"))
                self._get[(scoped, lock)] = Prepared(db.for_update(stmt) if lock else stmt)
        # A PostgreSQL row's version is its xmin: every update, whoever makes it, changes it.
        # The journal's locked read and its row write return it (``expect`` checks it).
        postgres = db.dialect == "postgresql"
        xmin = "sessions.xmin::text" if postgres else "NULL"
        version: sa.Label[Any] = sa.literal_column(xmin).label("row_version")
        self._expect = Prepared(sa.text("SELECT hangar_expect_session(:id, CAST(:version AS xid))"))
        self._returning: list[sa.Label[Any]] = [version] if postgres else []
        # A journal transaction's read: the row, locked, with its version, whether the session
        # has resources and its unconsumed client input (event columns prefixed ``ev_``).
        self._locked_pending = Prepared(
            db.for_update(
                sa.select(
                    *sessions.columns,
                    version,
                    sa.exists().where(session_resources.c.session_id == sessions.c.id).label("has_resources"),
                    *(c.label(f"ev_{c.name}") for c in events.columns),
                )
                .select_from(
                    sessions.outerjoin(events, sa.and_(events.c.session_id == sessions.c.id, pending_input()))
                )
                .where(sessions.c.id == sa.bindparam("id"))
                .order_by(events.c.seq),
                of=sessions,
            )
        )
        self._updates: dict[tuple[str, ...], Prepared] = {}
        json_set = (
            "jsonb_set(data::jsonb, '{calls}', CAST(:calls AS jsonb))::json"
            if db.dialect == "postgresql"
            else "json_set(data, '$.calls', json(:calls))"
        )
        self._set_calls = Prepared(
            sa.text(f"UPDATE sessions SET data = {json_set}, updated_at = :at WHERE id = :id")  # noqa: S608
        )

    async def insert(self, conn: Conn, record: SessionRecord) -> None:
        await conn.execute(sessions.insert().values(**record.__dict__))

    async def get(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        async with self.db.read() as conn:
            return await self.get_in(conn, workspace_id, session_id)

    async def status(self, session_id: str) -> str | None:
        """Just the status (the loop asks after every turn; the full row carries the agent)."""
        async with self.db.read() as conn:
            found = (await conn.run(self._status, {"id": session_id})).scalar()
        return str(found) if found is not None else None

    async def get_in(
        self, conn: Conn, workspace_id: str | None, session_id: str, *, lock: bool = False
    ) -> SessionRecord | None:
        params = {"id": session_id}
        if workspace_id is not None:
            params["workspace_id"] = workspace_id
        row = (await conn.run(self._get[(workspace_id is not None, lock)], params)).first()
        return _session(row) if row is not None else None

    async def get_locked_with_pending(self, conn: Conn, session_id: str) -> Locked | None:
        """In a write transaction: the session's row, locked, with its version, its unconsumed
        client inputs (oldest first) and whether it has resources, in one statement."""
        rows = (await conn.run(self._locked_pending, {"id": session_id})).all()
        if not rows:
            return None
        first = rows[0]._mapping
        pending = [stored_event(r._mapping, "ev_") for r in rows if r._mapping["ev_seq"] is not None]
        return Locked(_session(rows[0]), first["row_version"], pending, bool(first["has_resources"]))

    async def expect(self, conn: Conn, session_id: str, version: str) -> None:
        """In a PostgreSQL write transaction, before anything else: lock the session row if it
        is still ``version``, else abort the transaction (``RowChanged`` where it is sent)."""
        await conn.defer(self._expect, {"id": session_id, "version": version})

    async def set_calls(self, session_id: str, calls: list[dict[str, Any]], *, at: int) -> None:
        """Replace just ``data["calls"]`` of the session row, in one statement of its own (the loop
        marking a call as running before it runs it): the rest of ``data`` is left as it is in
        the database, so no read, lock or transaction is needed around it."""
        async with self.db.autocommit() as conn:
            await conn.run(self._set_calls, {"calls": json.dumps(calls), "at": at, "id": session_id})

    async def set_row(self, conn: Conn, session_id: str, values: dict[str, Any]) -> Later:
        """Write ``values`` (column → value) to the session row (the journal's one write per
        transaction; a hot statement, prepared once per set of columns). Its result is the
        row's new version on PostgreSQL (``row_version``), nothing on SQLite."""
        columns = tuple(sorted(values))
        prepared = self._updates.get(columns)
        if prepared is None:
            stmt = (
                sessions.update()
                .where(sessions.c.id == sa.bindparam("_id"))
                .values({c: sa.bindparam(c) for c in columns})
            )
            if self._returning:
                stmt = stmt.returning(*self._returning)
            prepared = self._updates[columns] = Prepared(stmt)
        return await conn.defer(prepared, {**values, "_id": session_id})

    async def save(
        self,
        conn: Conn,
        session_id: str,
        *,
        data: dict[str, Any] | None = None,
        status: str | None = None,
        archived_at: int | None = None,
        at: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"updated_at": at or now_us()}
        if data is not None:
            values["data"] = data
        if status is not None:
            values["status"] = status
        if archived_at is not None:
            values["archived_at"] = archived_at
        await conn.execute(sessions.update().where(sessions.c.id == session_id).values(**values))

    async def page(
        self, workspace_id: str, flt: SessionFilter, *, order: Order, limit: int, page: str | None
    ) -> Page:
        stmt = sa.select(sessions).where(sessions.c.workspace_id == workspace_id)
        if flt.nothing:
            stmt = stmt.where(sa.false())
        if flt.agent_id is not None:
            stmt = stmt.where(sessions.c.agent_id == flt.agent_id)
        if flt.agent_version is not None:
            stmt = stmt.where(sessions.c.agent_version == flt.agent_version)
        if flt.statuses:
            stmt = stmt.where(sessions.c.status.in_(flt.statuses))
        if not flt.include_archived:
            stmt = stmt.where(sessions.c.archived_at.is_(None))
        ops = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
        for op, value in flt.created:
            stmt = stmt.where(getattr(sessions.c.created_at, ops[op])(value))
        async with self.db.read() as conn:
            return await keyset_page(
                conn, stmt, sessions.c.created_at, sessions.c.id, order=order, limit=limit, page=page
            )

    async def unsettled(self) -> list[str]:
        """Sessions a restarted server must look at: mid-turn, or holding unprocessed input."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(sessions.c.id).where(sessions.c.status.in_(("running", "rescheduling")))
            )
            return [r[0] for r in rows.all()]

    async def with_pending_input(self) -> list[str]:
        """Idle sessions holding client input the loop has not consumed yet."""
        stmt = (
            sa.select(events.c.session_id)
            .distinct()
            .join(sessions, sessions.c.id == events.c.session_id)
            .where(pending_input(), sessions.c.status == "idle")
        )
        async with self.db.read() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]

    async def delete(self, conn: Conn, session_id: str) -> None:
        await conn.execute(session_resources.delete().where(session_resources.c.session_id == session_id))
        await conn.execute(threads.delete().where(threads.c.session_id == session_id))
        await conn.execute(sessions.delete().where(sessions.c.id == session_id))

    # threads -------------------------------------------------------------------------------

    async def insert_thread(self, conn: Conn, record: ThreadRecord) -> None:
        await conn.execute(threads.insert().values(**record.__dict__))

    async def threads_of(self, session_id: str, statuses: tuple[str, ...] = ()) -> list[ThreadRecord]:
        stmt = sa.select(threads).where(threads.c.session_id == session_id)
        if statuses:
            stmt = stmt.where(threads.c.status.in_(statuses))
        async with self.db.read() as conn:
            rows = await conn.execute(stmt.order_by(threads.c.created_at, threads.c.id))
            return [_thread(r) for r in rows.all()]

    async def thread(self, session_id: str, thread_id: str) -> ThreadRecord | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(threads).where(threads.c.session_id == session_id, threads.c.id == thread_id)
                )
            ).first()
        return _thread(row) if row is not None else None

    async def primary_thread(self, conn: Conn, session_id: str) -> ThreadRecord:
        row = (
            await conn.execute(
                sa.select(threads).where(
                    threads.c.session_id == session_id, threads.c.parent_thread_id.is_(None)
                )
            )
        ).first()
        assert row is not None, f"session {session_id} has no primary thread"
        return _thread(row)

    async def save_thread(
        self,
        conn: Conn,
        thread_id: str,
        *,
        status: str | None = None,
        data: dict[str, Any] | None = None,
        archived_at: int | None = None,
        at: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"updated_at": at or now_us()}
        if status is not None:
            values["status"] = status
        if data is not None:
            values["data"] = data
        if archived_at is not None:
            values["archived_at"] = archived_at
        await conn.execute(threads.update().where(threads.c.id == thread_id).values(**values))

    # resources -----------------------------------------------------------------------------

    async def _touch(self, conn: Conn, session_id: str) -> None:
        """Give the session row a new version without changing it, when resources are added or
        removed: a copy of the row that a journal transaction would build on (it says whether
        the session has resources) must then fail its guard (``hangar.runtime.journal``)."""
        await conn.execute(
            sessions.update().where(sessions.c.id == session_id).values(last_seq=sessions.c.last_seq)
        )

    async def insert_resource(
        self, conn: Conn, session_id: str, resource: dict[str, Any], secret: str | None = None
    ) -> None:
        at = now_us()
        await conn.execute(
            session_resources.insert().values(
                id=resource["id"],
                session_id=session_id,
                type=resource["type"],
                data=resource,
                secret=secret,
                created_at=at,
                updated_at=at,
            )
        )
        await self._touch(conn, session_id)

    async def resources(self, session_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in session_ids}
        if not session_ids:
            return out
        async with self.db.read() as conn:
            if len(session_ids) == 1:
                rows = await conn.run(self._resources_of, {"sid": session_ids[0]})
            else:
                rows = await conn.execute(_resources_where(session_resources.c.session_id.in_(session_ids)))
            for row in rows.all():
                out[row._mapping["session_id"]].append(row._mapping["data"])
        return out

    async def resource_secret(self, session_id: str, resource_id: str) -> str | None:
        """The sealed secret of a resource (a repository's token), or ``None``."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(session_resources.c.secret).where(
                        session_resources.c.session_id == session_id, session_resources.c.id == resource_id
                    )
                )
            ).first()
        return None if row is None else row._mapping["secret"]

    async def update_resource(
        self, conn: Conn, session_id: str, resource: dict[str, Any], secret: str | None, at: int
    ) -> None:
        await conn.execute(
            session_resources.update()
            .where(session_resources.c.session_id == session_id, session_resources.c.id == resource["id"])
            .values(data=resource, secret=secret, updated_at=at)
        )

    async def delete_resource(self, conn: Conn, session_id: str, resource_id: str) -> bool:
        result = await conn.execute(
            session_resources.delete().where(
                session_resources.c.session_id == session_id, session_resources.c.id == resource_id
            )
        )
        await self._touch(conn, session_id)
        return bool(result.rowcount)

    # -- resource secrets under the key rotation of `hangar secrets rotate-key` --------------------

    async def resource_secret_key_ids(self) -> dict[str, int]:
        """Stored repository tokens per key id."""
        stmt = sa.select(session_resources.c.secret).where(session_resources.c.secret.is_not(None))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return dict(Counter(sealed_key_id(r.secret) for r in rows))

    async def reseal_resource_secrets(self, box: SecretBox) -> int:
        """Seal every repository token that is not under the current key again under it."""
        prefix = f"hgs1.{box.keyring().current_id}."
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    self.db.for_update(
                        sa.select(session_resources.c.id, session_resources.c.secret).where(
                            session_resources.c.secret.is_not(None),
                            sa.not_(session_resources.c.secret.startswith(prefix, autoescape=True)),
                        )
                    )
                )
            ).all()
            for r in rows:
                token = box.keyring(create=False).open_json(r.secret, resource_aad(r.id))
                await conn.execute(
                    session_resources.update()
                    .where(session_resources.c.id == r.id, session_resources.c.secret == r.secret)
                    .values(secret=box.keyring().seal_json(token, resource_aad(r.id)))
                )
        return len(rows)
