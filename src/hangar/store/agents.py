"""Persistence of agents: a row per agent (current version, timestamps, archive state) and one
immutable JSON snapshot per version.

Every modifying call runs its read-check-write inside one ``db.write()`` transaction with the
agent row claimed by ``db.for_update`` (a no-op on SQLite, whose writes are already serialised),
so two concurrent updates can never publish the same version number.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hangar.errors import Conflict, InvalidRequest, NotFound
from hangar.ids import new_id
from hangar.store.db import Conn, Database, now_us
from hangar.store.paging import keyset_page
from hangar.store.schema import agent_versions, agents
from hangar.wire.agents import (
    Draft,
    PendingRef,
    build_create,
    build_update,
    render_agent,
    roster_refs,
    session_agent_snapshot,
)

_AGENT_ID = re.compile(r"^agent_[A-Za-z0-9]{1,64}$")

AGENT_NOT_FOUND = "Agent not found."
VERSION_NOT_FOUND = "Agent version not found."
INVALID_AGENT_ID = "Invalid agent ID."
ARCHIVED = "Cannot modify archived agent"
STALE = "Concurrent modification detected. Please fetch the latest version and retry."


def valid_agent_id(agent_id: str) -> bool:
    """Whether ``agent_id`` is well formed (``agent_`` + 1-64 letters/digits)."""
    return bool(_AGENT_ID.match(agent_id))


def _render(row: Mapping[Any, Any], data: Mapping[str, Any], version: int, updated_at: int) -> dict[str, Any]:
    return render_agent(
        data,
        agent_id=row["id"],
        version=version,
        created_at=row["created_at"],
        updated_at=updated_at,
        archived_at=row["archived_at"],
    )


_LISTED = sa.select(
    agents.c.id,
    agents.c.created_at,
    agents.c.archived_at,
    agent_versions.c.version,
    agent_versions.c.data,
    agent_versions.c.updated_at,
).select_from(
    agents.join(
        agent_versions,
        sa.and_(agent_versions.c.agent_id == agents.c.id, agent_versions.c.version == agents.c.version),
    )
)


class AgentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ reads

    async def get(
        self, workspace_id: str, agent_id: str, version: int | None = None
    ) -> dict[str, Any] | None:
        """The wire Agent (``archived_at`` included) at ``version`` (default: current), or None
        when the agent is not in this workspace or has no such version."""
        if not valid_agent_id(agent_id):
            return None
        async with self.db.read() as conn:
            return await self._get(conn, workspace_id, agent_id, version)

    async def _agent_row(
        self, conn: Conn, workspace_id: str, agent_id: str, *, lock: bool = False
    ) -> sa.RowMapping | None:
        stmt = sa.select(agents).where(agents.c.id == agent_id, agents.c.workspace_id == workspace_id)
        if lock:
            stmt = self.db.for_update(stmt)
        row = (await conn.execute(stmt)).first()
        return None if row is None else row._mapping

    async def _version_row(self, conn: Conn, agent_id: str, version: int) -> sa.RowMapping | None:
        row = (
            await conn.execute(
                sa.select(agent_versions).where(
                    agent_versions.c.agent_id == agent_id, agent_versions.c.version == version
                )
            )
        ).first()
        return None if row is None else row._mapping

    async def _get(
        self, conn: Conn, workspace_id: str, agent_id: str, version: int | None
    ) -> dict[str, Any] | None:
        row = await self._agent_row(conn, workspace_id, agent_id)
        if row is None:
            return None
        ver = await self._version_row(conn, agent_id, row["version"] if version is None else version)
        if ver is None:
            return None
        return _render(row, ver["data"], ver["version"], ver["updated_at"])

    async def retrieve(self, workspace_id: str, agent_id: str, version: int | None = None) -> dict[str, Any]:
        """Like :meth:`get`, raising the API errors (400 malformed id, 404 agent / version)."""
        self._check_id(agent_id)
        async with self.db.read() as conn:
            row = await self._agent_row(conn, workspace_id, agent_id)
            if row is None:
                raise NotFound(AGENT_NOT_FOUND)
            ver = await self._version_row(conn, agent_id, row["version"] if version is None else version)
            if ver is None:
                raise NotFound(VERSION_NOT_FOUND)
            return _render(row, ver["data"], ver["version"], ver["updated_at"])

    async def list(
        self,
        workspace_id: str,
        *,
        created_gte: int | None = None,
        created_lte: int | None = None,
        include_archived: bool = False,
        limit: int = 20,
        page: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Current versions, newest first."""
        stmt = _LISTED.where(agents.c.workspace_id == workspace_id)
        if created_gte is not None:
            stmt = stmt.where(agents.c.created_at >= created_gte)
        if created_lte is not None:
            stmt = stmt.where(agents.c.created_at <= created_lte)
        if not include_archived:
            stmt = stmt.where(agents.c.archived_at.is_(None))
        async with self.db.read() as conn:
            result = await keyset_page(
                conn, stmt, agents.c.created_at, agents.c.id, order="desc", limit=limit, page=page
            )
        data = [_render(r._mapping, r.data, r.version, r.updated_at) for r in result.rows]
        return data, result.next_cursor

    async def versions(
        self, workspace_id: str, agent_id: str, *, limit: int = 20, page: str | None = None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Every version of one agent, newest first."""
        self._check_id(agent_id)
        async with self.db.read() as conn:
            row = await self._agent_row(conn, workspace_id, agent_id)
            if row is None:
                raise NotFound(AGENT_NOT_FOUND)
            stmt = sa.select(agent_versions).where(agent_versions.c.agent_id == agent_id)
            # Keyset over (version, agent_id): agent_id is constant, so this pages by version.
            result = await keyset_page(
                conn,
                stmt,
                agent_versions.c.version,
                agent_versions.c.agent_id,
                order="desc",
                limit=limit,
                page=page,
            )
        data = [_render(row, r.data, r.version, r.updated_at) for r in result.rows]
        return data, result.next_cursor

    async def roster(
        self, workspace_id: str, agent: Mapping[str, Any]
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """The agents a (rendered) agent's ``multiagent`` refers to, keyed by ``(id, version)``,
        except the agent itself. Archived agents are included: a pinned roster stays readable."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        own = (agent["id"], agent["version"])
        async with self.db.read() as conn:
            for ref_id, ref_version in roster_refs(agent.get("multiagent")):
                if (ref_id, ref_version) == own:
                    continue
                found = await self._get(conn, workspace_id, ref_id, ref_version)
                if found is not None:
                    out[(ref_id, ref_version)] = found
        return out

    async def session_snapshot(
        self, workspace_id: str, agent_id: str, version: int | None = None
    ) -> dict[str, Any] | None:
        """``BetaManagedAgentsSessionAgent`` for an agent version (roster expanded), or None."""
        agent = await self.get(workspace_id, agent_id, version)
        if agent is None:
            return None
        return session_agent_snapshot(agent, roster=await self.roster(workspace_id, agent))

    # ------------------------------------------------------------------ writes

    async def create(self, workspace_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        agent_id = new_id("agent")
        draft = build_create(body, agent_id=agent_id)
        now = now_us()
        async with self.db.write() as conn:
            await self._resolve(conn, workspace_id, draft)
            await conn.execute(
                agents.insert().values(
                    id=agent_id,
                    workspace_id=workspace_id,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    archived_at=None,
                )
            )
            await conn.execute(
                agent_versions.insert().values(
                    agent_id=agent_id, version=1, data=draft.snapshot, updated_at=now
                )
            )
        return render_agent(
            draft.snapshot, agent_id=agent_id, version=1, created_at=now, updated_at=now, archived_at=None
        )

    async def update(self, workspace_id: str, agent_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a new version, or return the current one unchanged.

        Checks, in order: the agent exists (404), is not archived (400), the body's ``version``
        (if sent) is the current one (409, no version number used up), then the body itself.

        A no-op update, whose result equals the current snapshot (including ``metadata``), does
        **not** publish a new version: the current version is returned as is, with its
        ``updated_at``. The hosted behaviour is unknown (BEHAVIOUR §19); this choice keeps
        ``version`` meaning "the configuration changed", matching ``agent.updated`` firing only
        when a new version is published.
        """
        self._check_id(agent_id)
        async with self.db.write() as conn:
            row = await self._agent_row(conn, workspace_id, agent_id, lock=True)
            if row is None:
                raise NotFound(AGENT_NOT_FOUND)
            if row["archived_at"] is not None:
                raise InvalidRequest(ARCHIVED)
            expected = body.get("version")
            if isinstance(expected, int) and not isinstance(expected, bool) and expected != row["version"]:
                raise Conflict(STALE)
            current = await self._version_row(conn, agent_id, row["version"])
            if current is None:  # pragma: no cover - the schema keeps these in step
                raise NotFound(VERSION_NOT_FOUND)
            draft = build_update(body, current["data"], agent_id=agent_id)
            if draft.expected_version is not None and draft.expected_version != row["version"]:
                raise Conflict(STALE)
            await self._resolve(conn, workspace_id, draft)
            if draft.snapshot == current["data"]:
                return _render(row, current["data"], row["version"], current["updated_at"])
            version = row["version"] + 1
            now = max(now_us(), current["updated_at"] + 1)
            await conn.execute(
                agent_versions.insert().values(
                    agent_id=agent_id, version=version, data=draft.snapshot, updated_at=now
                )
            )
            await conn.execute(
                agents.update().where(agents.c.id == agent_id).values(version=version, updated_at=now)
            )
        return _render(row, draft.snapshot, version, now)

    async def archive(self, workspace_id: str, agent_id: str) -> dict[str, Any]:
        """Archive (terminal, idempotent: a repeat returns the first ``archived_at``)."""
        self._check_id(agent_id)
        async with self.db.write() as conn:
            row = await self._agent_row(conn, workspace_id, agent_id, lock=True)
            if row is None:
                raise NotFound(AGENT_NOT_FOUND)
            archived_at = row["archived_at"]
            if archived_at is None:
                archived_at = now_us()
                await conn.execute(
                    agents.update().where(agents.c.id == agent_id).values(archived_at=archived_at)
                )
            ver = await self._version_row(conn, agent_id, row["version"])
            if ver is None:  # pragma: no cover
                raise NotFound(VERSION_NOT_FOUND)
        return render_agent(
            ver["data"],
            agent_id=agent_id,
            version=ver["version"],
            created_at=row["created_at"],
            updated_at=ver["updated_at"],
            archived_at=archived_at,
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_id(agent_id: str) -> None:
        if not valid_agent_id(agent_id):
            raise InvalidRequest(INVALID_AGENT_ID)

    async def _resolve(self, conn: Conn, workspace_id: str, draft: Draft) -> None:
        """Check each newly sent roster reference and pin it to a version."""
        for pending in draft.pending:
            await self._resolve_one(conn, workspace_id, pending)

    async def _resolve_one(self, conn: Conn, workspace_id: str, pending: PendingRef) -> None:
        ref = pending.ref
        ref_id = ref["id"]
        row = await self._agent_row(conn, workspace_id, ref_id) if valid_agent_id(ref_id) else None
        if row is None:
            raise InvalidRequest(f'{pending.path}: agent "{ref_id}" not found')
        if row["archived_at"] is not None:
            raise InvalidRequest(f'{pending.path}: agent "{ref_id}" is archived')
        version = row["version"] if ref["version"] is None else ref["version"]
        ver = await self._version_row(conn, ref_id, version)
        if ver is None:
            raise InvalidRequest(f'{pending.path}: agent "{ref_id}" version {version} not found')
        if ver["data"].get("multiagent") is not None:
            raise InvalidRequest(
                f'{pending.path}: agent "{ref_id}" has multiagent configured; '
                "a roster agent cannot have its own roster (depth limit 1)"
            )
        ref["version"] = version
