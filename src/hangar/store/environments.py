"""Persistence of environments: one row each, the wire body (description, config, metadata,
scope) in the JSON ``data`` column. Every method is scoped to a workspace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from hangar.ids import new_id
from hangar.store.db import Database, now_us
from hangar.store.paging import newest_first
from hangar.store.schema import environments
from hangar.wire.environments import environment_object

# (env_id, name, data, archived) -> (name, data); raises an ApiError to refuse the change.
Change = Callable[[str, str, dict[str, Any], bool], tuple[str, dict[str, Any]]]


def _wire(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return environment_object(
        m["id"], m["name"], m["data"], m["created_at"], m["updated_at"], m["archived_at"]
    )


class EnvironmentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _one(self, workspace_id: str, env_id: str) -> sa.Select[Any]:
        return sa.select(environments).where(
            environments.c.workspace_id == workspace_id, environments.c.id == env_id
        )

    async def create(self, workspace_id: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
        at = now_us()
        env_id = new_id("environment")
        row: dict[str, Any] = {
            "id": env_id,
            "workspace_id": workspace_id,
            "name": name,
            "data": data,
            "created_at": at,
            "updated_at": at,
            "archived_at": None,
        }
        async with self.db.write() as conn:
            await conn.execute(environments.insert().values(**row))
        return environment_object(env_id, name, data, at, at, None)

    async def get(self, workspace_id: str, env_id: str) -> dict[str, Any] | None:
        """The environment's wire object (``archived_at`` included), or ``None``."""
        async with self.db.read() as conn:
            row = (await conn.execute(self._one(workspace_id, env_id))).first()
        return _wire(row) if row is not None else None

    async def update(self, workspace_id: str, env_id: str, change: Change) -> dict[str, Any] | None:
        """Apply ``change`` to the stored environment under a write lock; ``None`` if missing."""
        async with self.db.write() as conn:
            row = (await conn.execute(self.db.for_update(self._one(workspace_id, env_id)))).first()
            if row is None:
                return None
            m = row._mapping
            name, data = change(env_id, m["name"], m["data"], m["archived_at"] is not None)
            at = max(now_us(), m["updated_at"])
            await conn.execute(
                environments.update()
                .where(environments.c.id == env_id)
                .values(name=name, data=data, updated_at=at)
            )
        return environment_object(env_id, name, data, m["created_at"], at, m["archived_at"])

    async def archive(self, workspace_id: str, env_id: str) -> dict[str, Any] | None:
        """Archive (idempotent: a repeat keeps the first ``archived_at``); ``None`` if missing."""
        async with self.db.write() as conn:
            row = (await conn.execute(self.db.for_update(self._one(workspace_id, env_id)))).first()
            if row is None:
                return None
            if row._mapping["archived_at"] is not None:
                return _wire(row)
            at = max(now_us(), row._mapping["updated_at"])
            await conn.execute(
                environments.update().where(environments.c.id == env_id).values(archived_at=at, updated_at=at)
            )
            m = row._mapping
            return environment_object(env_id, m["name"], m["data"], m["created_at"], at, at)

    async def delete(self, workspace_id: str, env_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                environments.delete().where(
                    environments.c.workspace_id == workspace_id, environments.c.id == env_id
                )
            )
        return bool(result.rowcount)

    async def page(
        self, workspace_id: str, *, include_archived: bool, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, and the cursor of the next one."""
        async with self.db.read() as conn:
            found = await newest_first(
                conn,
                environments,
                environments.c.workspace_id == workspace_id,
                include_archived=include_archived,
                limit=limit,
                page=page,
            )
        return [_wire(r) for r in found.rows], found.next_cursor
