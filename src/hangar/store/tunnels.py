"""Persistence of MCP tunnels and their CA certificates. Every API method is scoped to a workspace.

The connector token is sealed with the store's :class:`~hangar.crypto.SecretBox` (AES-GCM, the
tunnel id as associated data) for ``reveal_token``, and kept as a SHA-256 for recognising a
connecting client (:meth:`TunnelStore.by_token`). Archiving a tunnel erases both, so the token
can never connect again, and archives its certificates. Reveals and rotations are recorded in
``tunnel_audit`` (who, when, why; never the token). Nothing here logs a token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hangar.crypto import SecretBox, SecretKeyError, UnsealError, sealed_key_id
from hangar.errors import Conflict, InternalError, InvalidRequest, NotFound
from hangar.ids import new_id
from hangar.store.db import Conn, Database, now_us
from hangar.store.paging import newest_first
from hangar.store.schema import tunnel_audit as audit
from hangar.store.schema import tunnel_certificates as certs
from hangar.store.schema import tunnels, workspaces
from hangar.wire import tunnels as wire

__all__ = ["TunnelRoute", "TunnelStore", "hash_token", "tunnel_aad"]

log = logging.getLogger(__name__)

TOKEN_PREFIX = "hgtnl_"  # noqa: S105 (a prefix, not a secret)
_LABEL_BYTES = 8  # a domain's label: 64 random bits as 16 hex digits


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tunnel_aad(tunnel_id: str) -> bytes:
    """The associated data of a tunnel's sealed token: its row."""
    return f"tunnel_token:{tunnel_id}".encode()


@dataclass(frozen=True)
class TunnelRoute:
    """What the relay needs to know about a tunnel (no secrets)."""

    id: str
    workspace_id: str
    domain: str
    archived: bool
    certificates: tuple[str, ...]
    """The PEM of every certificate that is not archived (traffic is refused while empty)."""


def _tunnel_wire(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return wire.tunnel_object(m["id"], m["display_name"], m["domain"], m["created_at"], m["archived_at"])


def _cert_wire(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return wire.certificate_object(
        m["id"], m["tunnel_id"], m["fingerprint"], m["expires_at"], m["created_at"], m["archived_at"]
    )


def tunnel_not_found(tunnel_id: str) -> NotFound:
    return NotFound(f"Tunnel {tunnel_id} not found.")


def certificate_not_found(certificate_id: str) -> NotFound:
    return NotFound(f"Certificate {certificate_id} not found.")


def _archived(tunnel_id: str) -> InvalidRequest:
    return InvalidRequest(f"Tunnel {tunnel_id} is archived.")


class TunnelStore:
    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self.db = db
        self._box = box

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            raise InternalError("no secret key is configured for this store")
        return self._box

    # -- tokens ----------------------------------------------------------------------------------

    def _new_token(self, tunnel_id: str) -> tuple[str, dict[str, Any]]:
        """A fresh token and the column values that store it."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            sealed = self.box.seal_json(token, tunnel_aad(tunnel_id))
        except SecretKeyError as exc:
            raise InternalError(f"cannot seal the tunnel token: {exc}") from exc
        return token, {"token_id": new_id("tunnel_token"), "token_hash": hash_token(token), "token": sealed}

    def _open(self, tunnel_id: str, sealed: str) -> str:
        try:
            value = self.box.open_json(sealed, tunnel_aad(tunnel_id))
        except (UnsealError, SecretKeyError) as exc:
            raise InternalError(f"the stored token of tunnel {tunnel_id} does not open: {exc}") from exc
        assert isinstance(value, str)
        return value

    async def _audit(
        self,
        conn: Conn,
        row: sa.Row[Any],
        action: str,
        *,
        token_id: str | None,
        key_id: str | None,
        reason: str | None = None,
    ) -> None:
        m = row._mapping
        await conn.execute(
            audit.insert().values(
                tunnel_id=m["id"],
                workspace_id=m["workspace_id"],
                action=action,
                token_id=token_id,
                key_id=key_id,
                reason=reason,
                at=now_us(),
            )
        )
        log.info(
            "tunnel %s",
            action,
            extra={"tunnel_id": m["id"], "token_id": token_id, "key_id": key_id, "reason": reason},
        )

    # -- tunnels ---------------------------------------------------------------------------------

    def _tunnel(self, workspace_id: str, tunnel_id: str) -> sa.Select[Any]:
        return sa.select(tunnels).where(tunnels.c.workspace_id == workspace_id, tunnels.c.id == tunnel_id)

    async def _locked_tunnel(self, conn: Conn, workspace_id: str, tunnel_id: str) -> sa.Row[Any]:
        row = (await conn.execute(self.db.for_update(self._tunnel(workspace_id, tunnel_id)))).first()
        if row is None:
            raise tunnel_not_found(tunnel_id)
        return row

    async def create(
        self, workspace_id: str, display_name: str | None, *, parent_domain: str
    ) -> dict[str, Any]:
        """A new tunnel on a domain ``<random>.<parent_domain>`` never handed out before (the
        column is unique forever)."""
        tunnel_id = new_id("tunnel")
        _, token_values = self._new_token(tunnel_id)
        for _attempt in range(5):
            domain = f"{secrets.token_hex(_LABEL_BYTES)}.{parent_domain}"
            at = now_us()
            try:
                async with self.db.write() as conn:
                    # Serialise creates per workspace (PostgreSQL) so the limit holds.
                    await conn.execute(
                        self.db.for_update(sa.select(workspaces.c.id).where(workspaces.c.id == workspace_id))
                    )
                    active = await conn.scalar(
                        sa.select(sa.func.count())
                        .select_from(tunnels)
                        .where(tunnels.c.workspace_id == workspace_id, tunnels.c.archived_at.is_(None))
                    )
                    if int(active or 0) >= wire.TUNNELS_PER_WORKSPACE:
                        raise InvalidRequest(
                            f"This workspace already has {wire.TUNNELS_PER_WORKSPACE} active tunnels, the "
                            "most allowed; archive one first."
                        )
                    taken = await conn.scalar(sa.select(tunnels.c.id).where(tunnels.c.domain == domain))
                    if taken is not None:
                        continue
                    await conn.execute(
                        tunnels.insert().values(
                            id=tunnel_id,
                            workspace_id=workspace_id,
                            display_name=display_name,
                            domain=domain,
                            created_at=at,
                            archived_at=None,
                            **token_values,
                        )
                    )
            except sa.exc.IntegrityError:  # a concurrent create took the same domain
                continue
            return wire.tunnel_object(tunnel_id, display_name, domain, at, None)
        raise InternalError("could not allocate a unique tunnel domain")

    async def get(self, workspace_id: str, tunnel_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (await conn.execute(self._tunnel(workspace_id, tunnel_id))).first()
        if row is None:
            raise tunnel_not_found(tunnel_id)
        return _tunnel_wire(row)

    async def page(
        self, workspace_id: str, *, include_archived: bool, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        async with self.db.read() as conn:
            found = await newest_first(
                conn,
                tunnels,
                tunnels.c.workspace_id == workspace_id,
                include_archived=include_archived,
                limit=limit,
                page=page,
            )
        return [_tunnel_wire(r) for r in found.rows], found.next_cursor

    async def archive(
        self, workspace_id: str, tunnel_id: str, *, key_id: str | None = None
    ) -> dict[str, Any]:
        """Archive (irreversible, idempotent): the token is erased, the certificates archived,
        and the domain stays taken forever."""
        async with self.db.write() as conn:
            row = await self._locked_tunnel(conn, workspace_id, tunnel_id)
            m = row._mapping
            if m["archived_at"] is not None:
                return _tunnel_wire(row)
            at = max(now_us(), m["created_at"])
            await conn.execute(
                tunnels.update()
                .where(tunnels.c.id == tunnel_id)
                .values(archived_at=at, token=None, token_hash=None)
            )
            await conn.execute(
                certs.update()
                .where(certs.c.tunnel_id == tunnel_id, certs.c.archived_at.is_(None))
                .values(archived_at=at)
            )
            await self._audit(conn, row, "archive", token_id=m["token_id"], key_id=key_id)
        return wire.tunnel_object(tunnel_id, m["display_name"], m["domain"], m["created_at"], at)

    async def reveal_token(self, workspace_id: str, tunnel_id: str, *, key_id: str | None) -> dict[str, Any]:
        async with self.db.write() as conn:
            row = await self._locked_tunnel(conn, workspace_id, tunnel_id)
            m = row._mapping
            if m["archived_at"] is not None or m["token"] is None:
                raise _archived(tunnel_id)
            token = self._open(tunnel_id, m["token"])
            await self._audit(conn, row, "reveal_token", token_id=m["token_id"], key_id=key_id)
        return wire.token_object(m["token_id"], token)

    async def rotate_token(
        self, workspace_id: str, tunnel_id: str, *, reason: str | None, key_id: str | None
    ) -> dict[str, Any]:
        """A new token (and token id); the old one stops working for new connections."""
        async with self.db.write() as conn:
            row = await self._locked_tunnel(conn, workspace_id, tunnel_id)
            if row._mapping["archived_at"] is not None:
                raise _archived(tunnel_id)
            token, values = self._new_token(tunnel_id)
            await conn.execute(tunnels.update().where(tunnels.c.id == tunnel_id).values(**values))
            await self._audit(
                conn, row, "rotate_token", token_id=values["token_id"], key_id=key_id, reason=reason
            )
        return wire.token_object(values["token_id"], token)

    async def audit_trail(self, workspace_id: str, tunnel_id: str) -> list[dict[str, Any]]:
        """The tunnel's audit records, oldest first (for operators and tests)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(audit)
                    .where(audit.c.workspace_id == workspace_id, audit.c.tunnel_id == tunnel_id)
                    .order_by(audit.c.id)
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    # -- certificates ----------------------------------------------------------------------------

    def _cert(self, workspace_id: str, tunnel_id: str, certificate_id: str) -> sa.Select[Any]:
        return sa.select(certs).where(
            certs.c.workspace_id == workspace_id, certs.c.tunnel_id == tunnel_id, certs.c.id == certificate_id
        )

    async def add_certificate(
        self, workspace_id: str, tunnel_id: str, new: wire.NewCertificate
    ) -> dict[str, Any]:
        certificate_id = new_id("tunnel_certificate")
        at = now_us()
        async with self.db.write() as conn:
            row = await self._locked_tunnel(conn, workspace_id, tunnel_id)
            if row._mapping["archived_at"] is not None:
                raise _archived(tunnel_id)
            active = (
                await conn.execute(
                    sa.select(certs.c.id, certs.c.fingerprint).where(
                        certs.c.tunnel_id == tunnel_id, certs.c.archived_at.is_(None)
                    )
                )
            ).all()
            same = next((r.id for r in active if r.fingerprint == new.fingerprint), None)
            if same is not None:
                raise Conflict(
                    f"Tunnel {tunnel_id} already trusts this certificate ({same}, fingerprint "
                    f"{new.fingerprint})."
                )
            if len(active) >= wire.CERTIFICATES_PER_TUNNEL:
                raise InvalidRequest(
                    f"Tunnel {tunnel_id} already has {wire.CERTIFICATES_PER_TUNNEL} active certificates, "
                    "the most allowed; archive one first."
                )
            await conn.execute(
                certs.insert().values(
                    id=certificate_id,
                    workspace_id=workspace_id,
                    tunnel_id=tunnel_id,
                    fingerprint=new.fingerprint,
                    pem=new.pem,
                    expires_at=new.expires_at,
                    created_at=at,
                    archived_at=None,
                )
            )
        return wire.certificate_object(certificate_id, tunnel_id, new.fingerprint, new.expires_at, at, None)

    async def get_certificate(self, workspace_id: str, tunnel_id: str, certificate_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            if (await conn.execute(self._tunnel(workspace_id, tunnel_id))).first() is None:
                raise tunnel_not_found(tunnel_id)
            row = (await conn.execute(self._cert(workspace_id, tunnel_id, certificate_id))).first()
        if row is None:
            raise certificate_not_found(certificate_id)
        return _cert_wire(row)

    async def page_certificates(
        self, workspace_id: str, tunnel_id: str, *, include_archived: bool, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        async with self.db.read() as conn:
            if (await conn.execute(self._tunnel(workspace_id, tunnel_id))).first() is None:
                raise tunnel_not_found(tunnel_id)
            found = await newest_first(
                conn,
                certs,
                certs.c.workspace_id == workspace_id,
                certs.c.tunnel_id == tunnel_id,
                include_archived=include_archived,
                limit=limit,
                page=page,
            )
        return [_cert_wire(r) for r in found.rows], found.next_cursor

    async def archive_certificate(
        self, workspace_id: str, tunnel_id: str, certificate_id: str
    ) -> dict[str, Any]:
        """Archive (idempotent). Archiving the last one is allowed: traffic is then refused."""
        async with self.db.write() as conn:
            await self._locked_tunnel(conn, workspace_id, tunnel_id)
            row = (
                await conn.execute(self.db.for_update(self._cert(workspace_id, tunnel_id, certificate_id)))
            ).first()
            if row is None:
                raise certificate_not_found(certificate_id)
            m = row._mapping
            if m["archived_at"] is not None:
                return _cert_wire(row)
            at = max(now_us(), m["created_at"])
            await conn.execute(certs.update().where(certs.c.id == certificate_id).values(archived_at=at))
        return wire.certificate_object(
            certificate_id, tunnel_id, m["fingerprint"], m["expires_at"], m["created_at"], at
        )

    # -- the relay -------------------------------------------------------------------------------

    async def _route(self, where: sa.ColumnElement[bool]) -> TunnelRoute | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(tunnels).where(where))).first()
            if row is None:
                return None
            pems = (
                await conn.execute(
                    sa.select(certs.c.pem)
                    .where(certs.c.tunnel_id == row.id, certs.c.archived_at.is_(None))
                    .order_by(certs.c.created_at, certs.c.id)
                )
            ).all()
            return TunnelRoute(
                row.id,
                row.workspace_id,
                row.domain,
                row.archived_at is not None,
                tuple(str(p.pem) for p in pems),
            )

    async def route_by_domain(self, domain: str) -> TunnelRoute | None:
        return await self._route(tunnels.c.domain == domain)

    async def route_by_id(self, tunnel_id: str) -> TunnelRoute | None:
        return await self._route(tunnels.c.id == tunnel_id)

    async def by_token(self, token: str) -> TunnelRoute | None:
        """The live (not archived) tunnel whose current token is ``token``."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        found = await self._route(tunnels.c.token_hash == hash_token(token))
        return found if found is not None and not found.archived else None

    # -- key rotation ----------------------------------------------------------------------------

    async def secret_key_ids(self) -> dict[str, int]:
        """Stored tokens per key id (all workspaces)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(tunnels.c.token).where(tunnels.c.token.is_not(None)))).all()
        return dict(Counter(sealed_key_id(r.token) for r in rows))

    async def reseal_all(self) -> int:
        """Seal every stored token that is not under the current key again under it."""
        prefix = f"hgs1.{self.box.keyring().current_id}."
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    self.db.for_update(
                        sa.select(tunnels.c.id, tunnels.c.token).where(
                            tunnels.c.token.is_not(None),
                            sa.not_(tunnels.c.token.startswith(prefix, autoescape=True)),
                        )
                    )
                )
            ).all()
            for r in rows:
                token = self.box.keyring(create=False).open_json(r.token, tunnel_aad(r.id))
                await conn.execute(
                    tunnels.update()
                    .where(tunnels.c.id == r.id, tunnels.c.token == r.token)
                    .values(token=self.box.keyring().seal_json(token, tunnel_aad(r.id)))
                )
        return len(rows)
