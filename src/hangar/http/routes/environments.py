"""Routes: /v1/environments (``client.beta.environments``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from hangar.errors import NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, page_envelope, query_bool, query_int, services
from hangar.http.routing import api_router
from hangar.wire import environments as wire

router = api_router()

Caller = Annotated[Principal, Depends(principal)]


def _not_found(env_id: str) -> NotFound:
    return NotFound(f"Environment {env_id} not found.")


@router.post("/v1/environments")
async def create_environment(request: Request, caller: Caller) -> dict[str, Any]:
    new = wire.parse_create(await json_body(request))
    return await services(request).store.environments.create(caller.workspace_id, new.name, new.data)


@router.get("/v1/environments")
async def list_environments(request: Request, caller: Caller) -> dict[str, Any]:
    data, next_page = await services(request).store.environments.page(
        caller.workspace_id,
        include_archived=query_bool(request, "include_archived"),
        limit=query_int(request, "limit", 20, 1, 100),
        page=request.query_params.get("page") or None,
    )
    return page_envelope(data, next_page)


@router.get("/v1/environments/{env_id}")
async def retrieve_environment(env_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    found = await services(request).store.environments.get(caller.workspace_id, env_id)
    if found is None:
        raise _not_found(env_id)
    return found


@router.post("/v1/environments/{env_id}")
async def update_environment(env_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    patch = wire.parse_update(await json_body(request))
    updated = await services(request).store.environments.update(caller.workspace_id, env_id, patch.apply)
    if updated is None:
        raise _not_found(env_id)
    return updated


@router.post("/v1/environments/{env_id}/archive")
async def archive_environment(env_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    archived = await services(request).store.environments.archive(caller.workspace_id, env_id)
    if archived is None:
        raise _not_found(env_id)
    return archived


@router.delete("/v1/environments/{env_id}")
async def delete_environment(env_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    if not await services(request).store.environments.delete(caller.workspace_id, env_id):
        raise _not_found(env_id)
    return wire.deleted_object(env_id)
