"""Routes: /v1/sessions/{id}/resources (add, list, retrieve, update, delete)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from hangar.domain.repositories import rotate_token
from hangar.domain.sessions import build_file_resource
from hangar.errors import InvalidRequest, NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, query_int, services
from hangar.http.routes.sessions import load_session
from hangar.http.routing import api_router
from hangar.services import Services
from hangar.store.db import now_us
from hangar.wire.sessions import MAX_FILES_PER_SESSION

router = api_router(prefix="/v1/sessions/{session_id}/resources")


async def _resources(svc: Services, session_id: str) -> list[dict[str, Any]]:
    return (await svc.store.sessions.resources([session_id]))[session_id]


@router.post("")
async def add(session_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    body = await json_body(request)
    rec = await load_session(svc, who, session_id)
    if rec.status == "terminated":
        raise InvalidRequest(f"Session {session_id} is terminated.")
    existing = await _resources(svc, session_id)
    if len(existing) >= MAX_FILES_PER_SESSION:
        raise InvalidRequest(f"resources: at most {MAX_FILES_PER_SESSION} resources per session")
    if body.get("type") != "file":
        raise InvalidRequest('type: only "file" resources can be added after a session is created')
    resource = await build_file_resource(
        svc,
        who.workspace_id,
        session_id,
        body,
        "body",
        [r["mount_path"] for r in existing if "mount_path" in r],
    )
    async with svc.store.db.write() as conn:
        await svc.store.sessions.insert_resource(conn, session_id, resource)
    return resource


@router.get("")
async def list_resources(
    session_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    await load_session(svc, who, session_id)
    items = await _resources(svc, session_id)
    limit = query_int(request, "limit", 1000, 1, 1000)
    start = 0
    page = request.query_params.get("page")
    if page:
        ids = [r["id"] for r in items]
        if page not in ids:
            raise InvalidRequest("invalid page cursor")
        start = ids.index(page) + 1
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return {"data": chunk, "next_page": chunk[-1]["id"] if more and chunk else None}


async def _one(svc: Services, who: Principal, session_id: str, resource_id: str) -> dict[str, Any]:
    await load_session(svc, who, session_id)
    for r in await _resources(svc, session_id):
        if r.get("id") == resource_id:
            return r
    raise NotFound(f"Resource {resource_id} not found.")


@router.get("/{resource_id}")
async def retrieve(
    session_id: str, resource_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    return await _one(services(request), who, session_id, resource_id)


@router.post("/{resource_id}")
async def update(
    session_id: str, resource_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    body = await json_body(request)
    resource = await _one(svc, who, session_id, resource_id)
    if resource["type"] == "github_repository":
        updated, sealed = rotate_token(svc, resource, body)
        async with svc.store.db.write() as conn:
            await svc.store.sessions.update_resource(conn, session_id, updated, sealed, now_us())
        return updated
    raise InvalidRequest(
        f"Resource {resource['id']} is a {resource['type']} resource; only github_repository "
        "resources can be updated"
    )


@router.delete("/{resource_id}")
async def delete(
    session_id: str, resource_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    await _one(svc, who, session_id, resource_id)
    async with svc.store.db.write() as conn:
        await svc.store.sessions.delete_resource(conn, session_id, resource_id)
    return {"id": resource_id, "type": "session_resource_deleted"}
