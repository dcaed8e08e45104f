"""Persistence of vaults and their credentials. Every method is scoped to a workspace.

A credential's secret fields are sealed with the store's :class:`~hangar.crypto.SecretBox`
(AES-GCM, the credential id as associated data) before they reach the database and opened only
by :meth:`VaultStore.credential_secret` and the token refresh of ``mcp_oauth_validate``;
archiving a credential erases them. Nothing here logs a secret.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hangar.crypto import SecretBox, SecretKeyError, UnsealError, credential_aad, sealed_key_id
from hangar.errors import Conflict, InternalError, InvalidRequest, NotFound
from hangar.ids import new_id
from hangar.store.db import Conn, Database, now_us
from hangar.store.paging import newest_first
from hangar.store.schema import vault_credentials as creds
from hangar.store.schema import vaults
from hangar.wire import vaults as wire
from hangar.wire.common import merge_metadata

__all__ = ["CredentialRef", "ResealReport", "VaultStore"]


@dataclass(frozen=True)
class CredentialRef:
    """An active credential as the runtime sees it, without its secret (see
    :meth:`VaultStore.credential_secret` for that)."""

    id: str
    vault_id: str
    type: str
    """``mcp_oauth`` | ``static_bearer`` | ``environment_variable``."""
    mcp_server_url: str | None
    """What an MCP credential matches (exactly); ``None`` for ``environment_variable``."""
    secret_name: str | None
    """The environment variable of an ``environment_variable`` credential."""
    auth: dict[str, Any]
    """The echoed (secret-free) ``auth`` object."""


@dataclass(frozen=True)
class ResealReport:
    resealed: int
    """Secrets sealed again under the current key."""
    by_key: dict[str, int]
    """Stored secrets per key id, after the pass."""


def _vault_wire(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return wire.vault_object(
        m["id"], m["display_name"], m["metadata"], m["created_at"], m["updated_at"], m["archived_at"]
    )


def _cred_wire(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return wire.credential_object(
        m["id"],
        m["vault_id"],
        m["display_name"],
        m["metadata"],
        m["auth"],
        m["created_at"],
        m["updated_at"],
        m["archived_at"],
    )


def _vault_not_found(vault_id: str) -> NotFound:
    return NotFound(f"Vault {vault_id} not found.")


def _key_label(auth: dict[str, Any]) -> str:
    if auth["type"] == "environment_variable":
        return f'secret_name "{auth["secret_name"]}"'
    return f'mcp_server_url "{auth["mcp_server_url"]}"'


class VaultStore:
    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self.db = db
        self._box = box

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            raise InternalError("no secret key is configured for this store")
        return self._box

    # -- sealing -------------------------------------------------------------------------------

    def _seal(self, credential_id: str, secret: dict[str, Any]) -> str:
        try:
            return self.box.seal_json(secret, credential_aad(credential_id))
        except SecretKeyError as exc:
            raise InternalError(f"cannot seal the credential's secret: {exc}") from exc

    def _open(self, credential_id: str, sealed: str) -> dict[str, Any]:
        try:
            value = self.box.open_json(sealed, credential_aad(credential_id))
        except (UnsealError, SecretKeyError) as exc:
            raise InternalError(
                f"the stored secret of credential {credential_id} does not open: {exc}"
            ) from exc
        assert isinstance(value, dict)
        return value

    # -- vaults ----------------------------------------------------------------------------------

    def _vault(self, workspace_id: str, vault_id: str) -> sa.Select[Any]:
        return sa.select(vaults).where(vaults.c.workspace_id == workspace_id, vaults.c.id == vault_id)

    async def create_vault(self, workspace_id: str, new: wire.NewVault) -> dict[str, Any]:
        at = now_us()
        vault_id = new_id("vault")
        async with self.db.write() as conn:
            await conn.execute(
                vaults.insert().values(
                    id=vault_id,
                    workspace_id=workspace_id,
                    display_name=new.display_name,
                    metadata=new.metadata,
                    created_at=at,
                    updated_at=at,
                    archived_at=None,
                )
            )
        return wire.vault_object(vault_id, new.display_name, new.metadata, at, at, None)

    async def get_vault(self, workspace_id: str, vault_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(self._vault(workspace_id, vault_id))).first()
        return _vault_wire(row) if row is not None else None

    async def update_vault(self, workspace_id: str, vault_id: str, patch: wire.VaultPatch) -> dict[str, Any]:
        async with self.db.write() as conn:
            row = (await conn.execute(self.db.for_update(self._vault(workspace_id, vault_id)))).first()
            if row is None:
                raise _vault_not_found(vault_id)
            m = row._mapping
            if m["archived_at"] is not None:
                raise InvalidRequest(f"Vault {vault_id} is archived and cannot be modified.")
            name, metadata = patch.apply(m["display_name"], m["metadata"])
            at = max(now_us(), m["updated_at"])
            await conn.execute(
                vaults.update()
                .where(vaults.c.id == vault_id)
                .values(display_name=name, metadata=metadata, updated_at=at)
            )
        return wire.vault_object(vault_id, name, metadata, m["created_at"], at, None)

    async def archive_vault(self, workspace_id: str, vault_id: str) -> dict[str, Any]:
        """Archive (idempotent). Its credentials stay, for the sessions already bound to it."""
        async with self.db.write() as conn:
            row = (await conn.execute(self.db.for_update(self._vault(workspace_id, vault_id)))).first()
            if row is None:
                raise _vault_not_found(vault_id)
            m = row._mapping
            if m["archived_at"] is not None:
                return _vault_wire(row)
            at = max(now_us(), m["updated_at"])
            await conn.execute(
                vaults.update().where(vaults.c.id == vault_id).values(archived_at=at, updated_at=at)
            )
        return wire.vault_object(vault_id, m["display_name"], m["metadata"], m["created_at"], at, at)

    async def delete_vault(self, workspace_id: str, vault_id: str) -> bool:
        """Delete the vault and every credential in it (secrets included)."""
        async with self.db.write() as conn:
            row = (await conn.execute(self.db.for_update(self._vault(workspace_id, vault_id)))).first()
            if row is None:
                return False
            await conn.execute(creds.delete().where(creds.c.vault_id == vault_id))
            await conn.execute(vaults.delete().where(vaults.c.id == vault_id))
        return True

    async def page_vaults(
        self, workspace_id: str, *, include_archived: bool, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        async with self.db.read() as conn:
            found = await newest_first(
                conn,
                vaults,
                vaults.c.workspace_id == workspace_id,
                include_archived=include_archived,
                limit=limit,
                page=page,
            )
        return [_vault_wire(r) for r in found.rows], found.next_cursor

    async def usable_vaults(self, workspace_id: str, vault_ids: list[str]) -> dict[str, bool]:
        """``{vault_id: archived}`` for those of ``vault_ids`` that exist in the workspace."""
        if not vault_ids:
            return {}
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(vaults.c.id, vaults.c.archived_at).where(
                        vaults.c.workspace_id == workspace_id, vaults.c.id.in_(set(vault_ids))
                    )
                )
            ).all()
        return {r.id: r.archived_at is not None for r in rows}

    # -- credentials -----------------------------------------------------------------------------

    def _cred(self, workspace_id: str, vault_id: str, credential_id: str) -> sa.Select[Any]:
        return sa.select(creds).where(
            creds.c.workspace_id == workspace_id, creds.c.vault_id == vault_id, creds.c.id == credential_id
        )

    async def _conflict(self, conn: Conn, vault_id: str, key: str, exclude: str | None = None) -> str | None:
        stmt = sa.select(creds.c.id).where(
            creds.c.vault_id == vault_id, creds.c.match_key == key, creds.c.archived_at.is_(None)
        )
        if exclude is not None:
            stmt = stmt.where(creds.c.id != exclude)
        found = await conn.scalar(stmt)
        return str(found) if found is not None else None

    async def create_credential(
        self, workspace_id: str, vault_id: str, new: wire.NewCredential
    ) -> dict[str, Any]:
        at = now_us()
        credential_id = new_id("credential")
        sealed = self._seal(credential_id, new.secret)
        try:
            async with self.db.write() as conn:
                vault = (await conn.execute(self.db.for_update(self._vault(workspace_id, vault_id)))).first()
                if vault is None:
                    raise _vault_not_found(vault_id)
                if vault._mapping["archived_at"] is not None:
                    raise InvalidRequest(f"Vault {vault_id} is archived.")
                active = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(creds)
                    .where(creds.c.vault_id == vault_id, creds.c.archived_at.is_(None))
                )
                if int(active or 0) >= wire.CREDENTIALS_PER_VAULT:
                    raise InvalidRequest(
                        f"Vault {vault_id} already holds {wire.CREDENTIALS_PER_VAULT} active credentials, "
                        "the most a vault may hold; archive or delete one first."
                    )
                other = await self._conflict(conn, vault_id, new.match_key)
                if other is not None:
                    raise Conflict(
                        f"Vault {vault_id} already has an active credential for {_key_label(new.auth)} "
                        f"({other}); archive it or update it instead."
                    )
                await conn.execute(
                    creds.insert().values(
                        id=credential_id,
                        workspace_id=workspace_id,
                        vault_id=vault_id,
                        auth_type=new.auth_type,
                        match_key=new.match_key,
                        display_name=new.display_name,
                        metadata=new.metadata,
                        auth=new.auth,
                        secret=sealed,
                        created_at=at,
                        updated_at=at,
                        archived_at=None,
                    )
                )
        except sa.exc.IntegrityError as exc:  # a concurrent create won the unique index
            raise Conflict(
                f"Vault {vault_id} already has an active credential for {_key_label(new.auth)}."
            ) from exc
        return wire.credential_object(
            credential_id, vault_id, new.display_name, new.metadata, new.auth, at, at, None
        )

    async def get_credential(
        self, workspace_id: str, vault_id: str, credential_id: str
    ) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(self._cred(workspace_id, vault_id, credential_id))).first()
        return _cred_wire(row) if row is not None else None

    async def update_credential(
        self, workspace_id: str, vault_id: str, credential_id: str, patch: wire.CredentialPatch
    ) -> dict[str, Any] | None:
        async with self.db.write() as conn:
            stmt = self.db.for_update(self._cred(workspace_id, vault_id, credential_id))
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            m = row._mapping
            if m["archived_at"] is not None:
                raise InvalidRequest("Credential is archived.")
            values: dict[str, Any] = {}
            public = m["auth"]
            if patch.auth is not None:
                secret = self._open(credential_id, m["secret"])
                public, secret = patch.apply_auth(m["auth_type"], m["auth"], secret)
                values.update(auth=public, secret=self._seal(credential_id, secret))
            name = patch.display_name if patch.display_name is not None else m["display_name"]
            metadata = merge_metadata(m["metadata"], patch.metadata)
            at = max(now_us(), m["updated_at"])
            values.update(display_name=name, metadata=metadata, updated_at=at)
            await conn.execute(creds.update().where(creds.c.id == credential_id).values(**values))
        return wire.credential_object(
            credential_id, vault_id, name, metadata, public, m["created_at"], at, None
        )

    async def archive_credential(
        self, workspace_id: str, vault_id: str, credential_id: str
    ) -> dict[str, Any] | None:
        """Archive (idempotent): the secret is erased and the URL / secret name freed."""
        async with self.db.write() as conn:
            stmt = self.db.for_update(self._cred(workspace_id, vault_id, credential_id))
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            m = row._mapping
            if m["archived_at"] is not None:
                return _cred_wire(row)
            at = max(now_us(), m["updated_at"])
            await conn.execute(
                creds.update()
                .where(creds.c.id == credential_id)
                .values(archived_at=at, updated_at=at, secret=None)
            )
        return wire.credential_object(
            credential_id, vault_id, m["display_name"], m["metadata"], m["auth"], m["created_at"], at, at
        )

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                creds.delete().where(
                    creds.c.workspace_id == workspace_id,
                    creds.c.vault_id == vault_id,
                    creds.c.id == credential_id,
                )
            )
        return bool(result.rowcount)

    async def page_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        async with self.db.read() as conn:
            if (await conn.execute(self._vault(workspace_id, vault_id))).first() is None:
                raise _vault_not_found(vault_id)
            found = await newest_first(
                conn,
                creds,
                creds.c.workspace_id == workspace_id,
                creds.c.vault_id == vault_id,
                include_archived=include_archived,
                limit=limit,
                page=page,
            )
        return [_cred_wire(r) for r in found.rows], found.next_cursor

    # -- server-side use (runtime, validation) ---------------------------------------------------

    async def credential_secret(self, workspace_id: str, credential_id: str) -> dict[str, Any]:
        """The credential's whole ``auth``, secrets decrypted, shaped like the create ``auth``
        (``expires_at`` as RFC 3339 or ``None``). For server-side use only: never echo or log it.

        Raises :class:`~hangar.errors.NotFound` for an unknown or archived credential.
        """
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(creds).where(creds.c.workspace_id == workspace_id, creds.c.id == credential_id)
                )
            ).first()
        if row is None or row._mapping["archived_at"] is not None or row._mapping["secret"] is None:
            raise NotFound(f"Credential {credential_id} not found.")
        return wire.full_auth(row._mapping["auth"], self._open(credential_id, row._mapping["secret"]))

    async def credentials_for_vaults(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRef]:
        """The active credentials of ``vault_ids`` (archived vaults included: sessions bound to
        them keep working), in the order of ``vault_ids``, then oldest first. When two vaults
        hold a credential for the same URL or secret name, the first one listed wins."""
        if not vault_ids:
            return []
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(creds)
                    .where(
                        creds.c.workspace_id == workspace_id,
                        creds.c.vault_id.in_(set(vault_ids)),
                        creds.c.archived_at.is_(None),
                    )
                    .order_by(creds.c.created_at, creds.c.id)
                )
            ).all()
        rank = {vid: i for i, vid in reversed(list(enumerate(vault_ids)))}
        rows.sort(key=lambda r: rank[r.vault_id])
        out: list[CredentialRef] = []
        for r in rows:
            auth = wire.auth_object(r.auth)
            out.append(
                CredentialRef(
                    r.id, r.vault_id, r.auth_type, auth.get("mcp_server_url"), auth.get("secret_name"), auth
                )
            )
        return out

    async def store_oauth_tokens(
        self,
        workspace_id: str,
        credential_id: str,
        *,
        access_token: str,
        expires_at_us: int | None,
        refresh_token: str | None = None,
    ) -> bool:
        """Store tokens from a refresh (sealed again); ``refresh_token`` ``None`` keeps the stored
        one. ``False`` when the credential is gone or archived meanwhile."""
        async with self.db.write() as conn:
            stmt = self.db.for_update(
                sa.select(creds).where(creds.c.workspace_id == workspace_id, creds.c.id == credential_id)
            )
            row = (await conn.execute(stmt)).first()
            if (
                row is None
                or row._mapping["archived_at"] is not None
                or row._mapping["auth_type"] != "mcp_oauth"
            ):
                return False
            m = row._mapping
            secret = self._open(credential_id, m["secret"])
            secret["access_token"] = access_token
            if refresh_token is not None:
                secret["refresh_token"] = refresh_token
            auth = {**m["auth"], "expires_at": expires_at_us}
            await conn.execute(
                creds.update()
                .where(creds.c.id == credential_id)
                .values(
                    auth=auth,
                    secret=self._seal(credential_id, secret),
                    updated_at=max(now_us(), m["updated_at"]),
                )
            )
        return True

    # -- key rotation ----------------------------------------------------------------------------

    async def secret_key_ids(self) -> dict[str, int]:
        """Stored secrets per key id (all workspaces)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(creds.c.secret).where(creds.c.secret.is_not(None)))).all()
        return dict(Counter(sealed_key_id(r.secret) for r in rows))

    async def reseal_all(self, batch: int = 200) -> ResealReport:
        """Seal every stored secret that is not under the current key again under it (all
        workspaces), ``batch`` rows per transaction. A secret that does not open raises."""
        current = self.box.keyring().current_id
        prefix = f"hgs1.{current}."
        resealed = 0
        while True:
            async with self.db.write() as conn:
                stmt = (
                    sa.select(creds.c.id, creds.c.secret)
                    .where(
                        creds.c.secret.is_not(None),
                        sa.not_(creds.c.secret.startswith(prefix, autoescape=True)),
                    )
                    .order_by(creds.c.id)
                    .limit(batch)
                )
                rows = (await conn.execute(self.db.for_update(stmt))).all()
                for r in rows:
                    secret = self.box.keyring(create=False).open_json(r.secret, credential_aad(r.id))
                    await conn.execute(
                        creds.update()
                        .where(creds.c.id == r.id, creds.c.secret == r.secret)
                        .values(secret=self.box.keyring().seal_json(secret, credential_aad(r.id)))
                    )
            resealed += len(rows)
            if len(rows) < batch:
                break
        return ResealReport(resealed, await self.secret_key_ids())
