"""Authentication: ``Authorization: Bearer <key>`` or ``x-api-key``; every object is scoped to
the key's workspace.

Three kinds of credential: API keys (``admin``), environment keys (``environment``, bound to one
environment) and a self-hosted work item's sessions token (``work``), which reaches only its own
session and work item (``hangar.domain.work.token_allows``)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from hangar.domain.work import is_work_token, token_allows, work_token_item
from hangar.errors import AuthenticationFailed, PermissionDenied
from hangar.http.deps import services


@dataclass(frozen=True)
class Principal:
    workspace_id: str
    key_id: str
    kind: str
    environment_id: str | None = None
    session_id: str | None = None  # a sessions token's session


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
    svc = services(request)
    item = await work_token_item(svc, token) if is_work_token(token) else None
    if item is not None:
        route = getattr(request.scope.get("route"), "path", None)
        if not token_allows(item, request.method, route, request.path_params):
            raise PermissionDenied("A work item's sessions token only reaches its own session and work item.")
        found = Principal(item.workspace_id, item.id, "work", item.environment_id, item.session_id)
        request.state.principal = found
        return found
    key = await svc.store.keys.authenticate(token)
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
