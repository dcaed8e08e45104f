"""API keys and workspaces. Only a SHA-256 of each key is stored.

A plain SHA-256 (not a slow password hash) is right here: keys are 256-bit random tokens,
so there is nothing to brute-force, and every request must verify one cheaply.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from hangar.ids import new_id
from hangar.store.db import Database, now_us
from hangar.store.prepared import Prepared
from hangar.store.schema import api_keys, environments, workspaces

_AUTHENTICATE = Prepared(
    sa.select(api_keys).where(api_keys.c.key_hash == sa.bindparam("hash"), api_keys.c.revoked_at.is_(None))
)
"""Every request runs it (a hot statement, see hangar.store.prepared)."""

KEY_PREFIX = "sk-hangar-"
DEFAULT_WORKSPACE = "wrkspc_default"
KeyKind = Literal["admin", "environment"]


class RevokedKey(Exception):
    """``register`` was given a key that was revoked: it must not come back to life."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"that key ({key_id}) was revoked; choose a new one")
        self.key_id = key_id


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    workspace_id: str
    name: str
    hint: str
    kind: KeyKind
    environment_id: str | None
    created_at: int
    revoked_at: int | None


def _key(row: sa.Row[object]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        workspace_id=m["workspace_id"],
        name=m["name"],
        hint=m["hint"],
        kind=m["kind"],
        environment_id=m["environment_id"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


def _workspace_named(name: str) -> sa.Select[tuple[str]]:
    return (
        sa.select(workspaces.c.id)
        .where(sa.or_(workspaces.c.name == name, workspaces.c.id == name))
        .order_by(workspaces.c.created_at, workspaces.c.id)
        .limit(1)
    )


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_workspace(self, workspace_id: str = DEFAULT_WORKSPACE, name: str = "Default") -> str:
        async with self.db.write() as conn:
            exists = await conn.scalar(sa.select(workspaces.c.id).where(workspaces.c.id == workspace_id))
            if exists is None:
                await conn.execute(
                    workspaces.insert().values(id=workspace_id, name=name, created_at=now_us())
                )
        return workspace_id

    async def find_workspace(self, name: str) -> str | None:
        """The id of the (oldest) workspace called ``name``, or with that id."""
        async with self.db.read() as conn:
            found = await conn.scalar(_workspace_named(name))
        return None if found is None else str(found)

    async def workspace_named(self, name: str) -> str:
        """The id of the workspace called ``name`` (or with that id), created if new."""
        async with self.db.write() as conn:
            found = await conn.scalar(_workspace_named(name))
            if found is not None:
                return str(found)
            workspace_id = new_id("workspace")
            await conn.execute(workspaces.insert().values(id=workspace_id, name=name, created_at=now_us()))
        return workspace_id

    async def workspace_names(self) -> dict[str, str]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(workspaces.c.id, workspaces.c.name))).all()
        return {str(r.id): str(r.name) for r in rows}

    async def environment_workspace(self, environment_id: str) -> str | None:
        """The workspace of an environment, or ``None`` when there is no such environment."""
        async with self.db.read() as conn:
            found = await conn.scalar(
                sa.select(environments.c.workspace_id).where(environments.c.id == environment_id)
            )
        return None if found is None else str(found)

    async def create(
        self,
        name: str,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        kind: KeyKind = "admin",
        environment_id: str | None = None,
        plaintext: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Create a key; returns the plaintext (shown once) and its record."""
        if workspace_id == DEFAULT_WORKSPACE:
            await self.ensure_workspace(workspace_id)
        plaintext = plaintext or KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id=new_id("api_key"),
            workspace_id=workspace_id,
            name=name,
            hint=plaintext[-4:],
            kind=kind,
            environment_id=environment_id,
            created_at=now_us(),
            revoked_at=None,
        )
        async with self.db.write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    workspace_id=key.workspace_id,
                    name=key.name,
                    key_hash=hash_key(plaintext),
                    hint=key.hint,
                    kind=key.kind,
                    environment_id=key.environment_id,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )
        return plaintext, key

    async def register(self, plaintext: str, name: str = "HANGAR_API_KEY") -> ApiKey:
        """Register a caller-chosen key (idempotent): used for ``HANGAR_API_KEY``.

        Raises ``RevokedKey`` when that key was registered before and then revoked.
        """
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(plaintext)))
            ).first()
        if row is not None:
            found = _key(row)
            if found.revoked_at is not None:
                raise RevokedKey(found.id)
            return found
        _, key = await self.create(name, plaintext=plaintext)
        return key

    async def authenticate(self, plaintext: str) -> ApiKey | None:
        async with self.db.read() as conn:
            row = (await conn.run(_AUTHENTICATE, {"hash": hash_key(plaintext)})).first()
        return _key(row) if row is not None else None

    async def list(self, include_revoked: bool = False) -> list[ApiKey]:
        stmt = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            stmt = stmt.where(api_keys.c.revoked_at.is_(None))
        async with self.db.read() as conn:
            return [_key(r) for r in (await conn.execute(stmt)).all()]

    async def count_admin(self) -> int:
        async with self.db.read() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.kind == "admin")
            )
        return int(n or 0)

    async def revoke(self, key_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_us())
            )
        return bool(result.rowcount)
