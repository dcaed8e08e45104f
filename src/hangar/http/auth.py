"""Authentication: ``Authorization: Bearer <key>`` or ``x-api-key``; every object is scoped to
the key's workspace."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from hangar.errors import AuthenticationFailed
from hangar.http.deps import services


@dataclass(frozen=True)
class Principal:
    workspace_id: str
    key_id: str
    kind: str
    environment_id: str | None = None


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    token = presented_key(request)
    if token is None:
        raise AuthenticationFailed("Authentication failed")
    key = await services(request).store.keys.authenticate(token)
    if key is None:
        raise AuthenticationFailed("Authentication failed")
    found = Principal(key.workspace_id, key.id, key.kind, key.environment_id)
    request.state.principal = found
    return found


async def admin(request: Request) -> Principal:
    """FastAPI dependency: an API key (not an environment key)."""
    found = await principal(request)
    if found.kind != "admin":
        raise AuthenticationFailed("Authentication failed")
    return found
