"""Persistence of the self-hosted work queue: work items, their leases, and the workers polling.

The queue mechanics live here because they are about rows racing each other:

- **Claim.** A poll takes the oldest claimable item of its environment in one write
  transaction: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two pollers never take the same row),
  the single writer on SQLite. Claimable means ``queued`` and either never handed out or handed
  out (``polled_at``) longer ago than the poll's ``reclaim_older_than_ms`` without an ack.
- **Leases.** ``starting``/``active``/``stopping`` items hold a lease until
  ``lease_expires_at``. Every operation on an environment's queue first *sweeps* it: a lapsed
  ``starting``/``active`` item goes back to ``queued`` (its sessions token revoked, so the
  vanished worker can no longer act), a lapsed ``stopping`` item becomes ``stopped``.
- **Waking.** A blocking poll waits on an in-process signal set by ``enqueue`` and re-checks
  every ``BACKSTOP_S`` (another server process, or a signal sent before its commit).

The rules of each transition (ack, heartbeat, stop) are in ``hangar.domain.work`` and reach the
row through ``change``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hangar.ids import new_id
from hangar.store.db import Conn, Database, now_us
from hangar.store.paging import keyset_page
from hangar.store.schema import work_items, work_pollers
from hangar.wire.common import ts

log = logging.getLogger(__name__)

WorkState = Literal["queued", "starting", "active", "stopping", "stopped"]
HELD_STATES: tuple[WorkState, ...] = ("starting", "active")
LIVE_STATES: tuple[WorkState, ...] = ("queued", "starting", "active", "stopping")
# Items polled less than this long ago count as ``pending`` in the stats (the poll default).
DEFAULT_RECLAIM_US = 5_000_000
# ``workers_polling`` counts workers seen this recently; older poller rows are pruned after an hour.
POLLERS_WINDOW_US = 30_000_000
POLLERS_KEEP_US = 3_600_000_000
BACKSTOP_S = 0.1


@dataclass(frozen=True)
class WorkRecord:
    id: str
    workspace_id: str
    environment_id: str
    session_id: str
    kind: str
    state: WorkState
    metadata: dict[str, str]
    ttl_seconds: int
    token_hash: str | None
    polled_by: str | None
    created_at: int
    queued_at: int
    polled_at: int | None
    acknowledged_at: int | None
    started_at: int | None
    latest_heartbeat_at: int | None
    lease_heartbeat_at: int | None
    lease_expires_at: int | None
    stop_requested_at: int | None
    stopped_at: int | None

    def wire(self, secret: str | None = None) -> dict[str, Any]:
        """The ``BetaSelfHostedWork`` object; ``secret`` only in a poll response."""
        return {
            "type": "work",
            "id": self.id,
            "environment_id": self.environment_id,
            "state": self.state,
            "data": {"type": self.kind, "id": self.session_id},
            "metadata": dict(self.metadata),
            "secret": secret,
            "created_at": ts(self.created_at),
            "acknowledged_at": ts(self.acknowledged_at),
            "started_at": ts(self.started_at),
            "latest_heartbeat_at": ts(self.latest_heartbeat_at),
            "stop_requested_at": ts(self.stop_requested_at),
            "stopped_at": ts(self.stopped_at),
        }


_FIELDS = tuple(f.name for f in fields(WorkRecord))


def _record(row: sa.Row[Any]) -> WorkRecord:
    m = row._mapping
    return WorkRecord(**{name: m[name] for name in _FIELDS})


# (the item as stored, now in microseconds) -> the item to store; raises an ApiError to refuse.
Change = Callable[[WorkRecord, int], WorkRecord]


@dataclass(frozen=True)
class QueueStats:
    depth: int
    pending: int
    oldest_queued_at: int | None
    workers_polling: int


class WorkStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._signals: dict[str, asyncio.Event] = {}

    # --- waking blocked polls ----------------------------------------------------------------

    def _signal(self, environment_id: str) -> None:
        event = self._signals.pop(environment_id, None)
        if event is not None:
            event.set()

    async def wait_for_work(self, environment_id: str, seconds: float) -> None:
        """Return when an item may have been queued here, or after ``seconds``."""
        event = self._signals.setdefault(environment_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    # --- queueing ----------------------------------------------------------------------------

    async def enqueue(
        self,
        conn: Conn,
        *,
        workspace_id: str,
        environment_id: str,
        session_id: str,
        ttl_seconds: int,
        at: int | None = None,
    ) -> WorkRecord:
        """Queue a session work item inside the caller's write transaction."""
        at = at if at is not None else now_us()
        record = WorkRecord(
            id=new_id("work"),
            workspace_id=workspace_id,
            environment_id=environment_id,
            session_id=session_id,
            kind="session",
            state="queued",
            metadata={},
            ttl_seconds=ttl_seconds,
            token_hash=None,
            polled_by=None,
            created_at=at,
            queued_at=at,
            polled_at=None,
            acknowledged_at=None,
            started_at=None,
            latest_heartbeat_at=None,
            lease_heartbeat_at=None,
            lease_expires_at=None,
            stop_requested_at=None,
            stopped_at=None,
        )
        await conn.execute(work_items.insert().values(**record.__dict__))
        self._signal(environment_id)
        return record

    async def live_for_session(self, conn: Conn, session_id: str, at: int) -> WorkRecord | None:
        """The session's item that still stands for a worker (a lapsed ``stopping`` one does not)."""
        stmt = (
            sa.select(work_items)
            .where(work_items.c.session_id == session_id, work_items.c.state.in_(LIVE_STATES))
            .order_by(work_items.c.created_at.desc())
        )
        for row in (await conn.execute(stmt)).all():
            rec = _record(row)
            if rec.state == "stopping" and rec.lease_expires_at is not None and rec.lease_expires_at <= at:
                continue
            return rec
        return None

    async def sweep(self, conn: Conn, environment_id: str, at: int) -> None:
        """Apply lapsed leases of one environment: held items requeue, stopping ones stop.

        The lapsed rows are locked first, in id order and skipping rows another transaction
        holds (PostgreSQL), so concurrent sweeps neither deadlock nor wait on each other."""
        stmt = (
            sa.select(work_items.c.id, work_items.c.state)
            .where(
                work_items.c.environment_id == environment_id,
                work_items.c.state.in_((*HELD_STATES, "stopping")),
                work_items.c.lease_expires_at <= at,
            )
            .order_by(work_items.c.id)
        )
        if self.db.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = (await conn.execute(stmt)).all()
        held = [r.id for r in rows if r.state in HELD_STATES]
        stopping = [r.id for r in rows if r.state == "stopping"]
        if held:
            await conn.execute(
                work_items.update()
                .where(work_items.c.id.in_(held))
                .values(
                    state="queued",
                    queued_at=at,
                    polled_at=None,
                    polled_by=None,
                    token_hash=None,
                    acknowledged_at=None,
                    started_at=None,
                    lease_heartbeat_at=None,
                    lease_expires_at=None,
                )
            )
            log.info(
                "work leases lapsed; items requeued",
                extra={"environment_id": environment_id, "work_ids": held},
            )
        if stopping:
            await conn.execute(
                work_items.update()
                .where(work_items.c.id.in_(stopping))
                .values(state="stopped", stopped_at=work_items.c.lease_expires_at, token_hash=None)
            )

    def _claimable(self, environment_id: str, reclaim_us: int, at: int) -> sa.ColumnElement[bool]:
        return sa.and_(
            work_items.c.environment_id == environment_id,
            work_items.c.state == "queued",
            sa.or_(work_items.c.polled_at.is_(None), work_items.c.polled_at <= at - reclaim_us),
        )

    async def has_claimable(self, environment_id: str, reclaim_us: int) -> bool:
        """A cheap read: would a claim now find something (a lapsed lease included)?"""
        at = now_us()
        lapsed = sa.and_(
            work_items.c.environment_id == environment_id,
            work_items.c.state.in_(HELD_STATES),
            work_items.c.lease_expires_at <= at,
        )
        claimable = self._claimable(environment_id, reclaim_us, at)
        stmt = sa.select(work_items.c.id).where(sa.or_(claimable, lapsed))
        async with self.db.read() as conn:
            return (await conn.scalar(stmt.limit(1))) is not None

    async def _seen(self, conn: Conn, environment_id: str, worker_id: str, at: int) -> None:
        values = {"environment_id": environment_id, "worker_id": worker_id, "last_poll_at": at}
        keys = [work_pollers.c.environment_id, work_pollers.c.worker_id]
        if self.db.dialect == "postgresql":
            pg = postgresql.insert(work_pollers).values(**values)
            await conn.execute(pg.on_conflict_do_update(index_elements=keys, set_={"last_poll_at": at}))
        else:
            lite = sqlite.insert(work_pollers).values(**values)
            await conn.execute(lite.on_conflict_do_update(index_elements=keys, set_={"last_poll_at": at}))

    async def claim(
        self,
        workspace_id: str,
        environment_id: str,
        *,
        reclaim_us: int,
        worker_id: str | None,
        token_hash: str,
    ) -> WorkRecord | None:
        """Hand out the oldest claimable item with a fresh sessions-token hash, or ``None``."""
        async with self.db.write() as conn:
            at = now_us()
            if worker_id:
                await self._seen(conn, environment_id, worker_id, at)
            await self.sweep(conn, environment_id, at)
            stmt = (
                sa.select(work_items)
                .where(
                    work_items.c.workspace_id == workspace_id,
                    self._claimable(environment_id, reclaim_us, at),
                )
                .order_by(work_items.c.created_at, work_items.c.id)
                .limit(1)
            )
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            found = _record(row)
            await conn.execute(
                work_items.update()
                .where(work_items.c.id == found.id)
                .values(polled_at=at, polled_by=worker_id, token_hash=token_hash)
            )
        return WorkRecord(
            **{**found.__dict__, "polled_at": at, "polled_by": worker_id, "token_hash": token_hash}
        )

    # --- one item ----------------------------------------------------------------------------

    def _one(self, workspace_id: str, environment_id: str, work_id: str) -> sa.Select[Any]:
        return sa.select(work_items).where(
            work_items.c.id == work_id,
            work_items.c.workspace_id == workspace_id,
            work_items.c.environment_id == environment_id,
        )

    async def get(self, workspace_id: str, environment_id: str, work_id: str) -> WorkRecord | None:
        async with self.db.write() as conn:
            await self.sweep(conn, environment_id, now_us())
            row = (await conn.execute(self._one(workspace_id, environment_id, work_id))).first()
        return _record(row) if row is not None else None

    async def change(
        self, workspace_id: str, environment_id: str, work_id: str, change: Change
    ) -> WorkRecord | None:
        """Apply ``change`` to the (swept) item under a write lock; ``None`` if there is none."""
        async with self.db.write() as conn:
            at = now_us()
            await self.sweep(conn, environment_id, at)
            stmt = self.db.for_update(self._one(workspace_id, environment_id, work_id))
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            current = _record(row)
            updated = change(current, at)
            if updated != current:
                values = {k: v for k, v in updated.__dict__.items() if k != "id"}
                await conn.execute(work_items.update().where(work_items.c.id == work_id).values(**values))
        return updated

    async def authenticate(self, token_hash: str) -> WorkRecord | None:
        """The item whose live sessions token hashes to ``token_hash`` (not stopped, not lapsed)."""
        at = now_us()
        stmt = sa.select(work_items).where(
            work_items.c.token_hash == token_hash,
            work_items.c.state != "stopped",
            sa.or_(work_items.c.lease_expires_at.is_(None), work_items.c.lease_expires_at > at),
        )
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        return _record(row) if row is not None else None

    # --- lists and stats ---------------------------------------------------------------------

    async def page(
        self, workspace_id: str, environment_id: str, *, limit: int, page: str | None
    ) -> tuple[list[WorkRecord], str | None]:
        """One page of the environment's items, newest first, and the next cursor."""
        stmt = sa.select(work_items).where(
            work_items.c.workspace_id == workspace_id, work_items.c.environment_id == environment_id
        )
        async with self.db.write() as conn:
            await self.sweep(conn, environment_id, now_us())
            found = await keyset_page(
                conn,
                stmt,
                work_items.c.created_at,
                work_items.c.id,
                order="desc",
                limit=limit,
                page=page,
            )
        return [_record(r) for r in found.rows], found.next_cursor

    async def stats(self, workspace_id: str, environment_id: str) -> QueueStats:
        async with self.db.write() as conn:
            at = now_us()
            await self.sweep(conn, environment_id, at)
            await conn.execute(
                work_pollers.delete().where(
                    work_pollers.c.environment_id == environment_id,
                    work_pollers.c.last_poll_at < at - POLLERS_KEEP_US,
                )
            )
            queued = sa.and_(
                work_items.c.workspace_id == workspace_id,
                work_items.c.environment_id == environment_id,
                work_items.c.state == "queued",
            )
            is_pending = sa.and_(
                work_items.c.polled_at.is_not(None), work_items.c.polled_at > at - DEFAULT_RECLAIM_US
            )
            row = (
                await conn.execute(
                    sa.select(
                        sa.func.count().label("total"),
                        sa.func.coalesce(sa.func.sum(sa.case((is_pending, 1), else_=0)), 0).label("pending"),
                        sa.func.min(work_items.c.queued_at).label("oldest"),
                    ).where(queued)
                )
            ).first()
            polling = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(work_pollers)
                .where(
                    work_pollers.c.environment_id == environment_id,
                    work_pollers.c.last_poll_at > at - POLLERS_WINDOW_US,
                )
            )
        m = {} if row is None else row._mapping
        total, pending = int(m.get("total") or 0), int(m.get("pending") or 0)
        return QueueStats(total - pending, pending, m.get("oldest"), int(polling or 0))
