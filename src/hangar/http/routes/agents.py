"""Routes: /v1/agents (SDK ``client.beta.agents`` and ``client.beta.agents.versions``)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, page_envelope, query_bool, query_int, services
from hangar.http.routing import api_router
from hangar.wire.common import parse_ts

router = api_router(prefix="/v1/agents", tags=["agents"])

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


@router.post("")
async def create_agent(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    body = await json_body(request)
    return await services(request).store.agents.create(who.workspace_id, body)


@router.get("")
async def list_agents(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    q = request.query_params
    gte, lte = q.get("created_at[gte]"), q.get("created_at[lte]")
    data, next_page = await services(request).store.agents.list(
        who.workspace_id,
        created_gte=parse_ts(gte, "created_at[gte]") if gte else None,
        created_lte=parse_ts(lte, "created_at[lte]") if lte else None,
        include_archived=query_bool(request, "include_archived"),
        limit=query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        page=q.get("page") or None,
    )
    return page_envelope(data, next_page)


@router.get("/{agent_id}")
async def retrieve_agent(
    agent_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    version = request.query_params.get("version")
    return await services(request).store.agents.retrieve(
        who.workspace_id,
        agent_id,
        None if version in (None, "") else query_int(request, "version", 1, 1, 2**31 - 1),
    )


@router.post("/{agent_id}")
async def update_agent(
    agent_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    body = await json_body(request)
    return await services(request).store.agents.update(who.workspace_id, agent_id, body)


@router.post("/{agent_id}/archive")
async def archive_agent(
    agent_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    return await services(request).store.agents.archive(who.workspace_id, agent_id)


@router.get("/{agent_id}/versions")
async def list_agent_versions(
    agent_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    data, next_page = await services(request).store.agents.versions(
        who.workspace_id,
        agent_id,
        limit=query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        page=request.query_params.get("page") or None,
    )
    return page_envelope(data, next_page)
