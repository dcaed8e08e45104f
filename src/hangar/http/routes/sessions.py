"""Routes: /v1/sessions (create, retrieve, update, list, archive, delete)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from hangar.domain.sessions import check_budget, check_title, create_session
from hangar.errors import InvalidRequest, NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, query_bool, query_int, query_list, query_order, services
from hangar.http.routing import api_router
from hangar.ids import new_id
from hangar.services import Services
from hangar.store.bus import Closed
from hangar.store.db import now_us
from hangar.store.events import NewEvent
from hangar.store.sessions import SessionFilter, SessionRecord
from hangar.wire import agents as agent_wire
from hangar.wire import events as ev
from hangar.wire.common import check_metadata, merge_metadata, parse_ts
from hangar.wire.sessions import STATUSES, session_wire

router = api_router(prefix="/v1/sessions")

UPDATE_FIELDS = frozenset({"agent", "budget", "metadata", "title", "vault_ids"})


async def load_session(svc: Services, who: Principal, session_id: str) -> SessionRecord:
    rec = await svc.store.sessions.get(who.workspace_id, session_id)
    if rec is None:
        raise NotFound(f"Session {session_id} not found.")
    return rec


async def render(svc: Services, rec: SessionRecord) -> dict[str, Any]:
    resources = await svc.store.sessions.resources([rec.id])
    return session_wire(rec, resources[rec.id], now_us())


@router.post("")
async def create(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    session_id = await create_session(svc, who.workspace_id, await json_body(request))
    return await render(svc, await load_session(svc, who, session_id))


@router.get("")
async def list_sessions(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    q = request.query_params
    agent_version = q.get("agent_version")
    if agent_version is not None and not q.get("agent_id"):
        raise InvalidRequest("agent_version: requires agent_id")
    version: int | None = None
    if agent_version:
        version = query_int(request, "agent_version", 0, 1, 2**31)
    statuses = tuple(query_list(request, "statuses"))
    for s in statuses:
        if s not in STATUSES:
            raise InvalidRequest(
                f'statuses: "{s}" is not a valid value; expected one of {", ".join(STATUSES)}'
            )
    created = []
    for op in ("gt", "gte", "lt", "lte"):
        raw = q.get(f"created_at[{op}]")
        if raw:
            created.append((op, parse_ts(raw, f"created_at[{op}]")))
    flt = SessionFilter(
        agent_id=q.get("agent_id") or None,
        agent_version=version,
        statuses=statuses,
        include_archived=query_bool(request, "include_archived"),
        created=tuple(created),
        # Hangar has no deployments or memory stores yet: those filters match nothing.
        nothing=bool(q.get("deployment_id") or q.get("memory_store_id")),
    )
    page = await svc.store.sessions.page(
        who.workspace_id,
        flt,
        order=query_order(request, "desc"),
        limit=query_int(request, "limit", 20, 1, 100),
        page=q.get("page") or None,
    )
    recs = [
        SessionRecord(**{f: row._mapping[f] for f in SessionRecord.__dataclass_fields__}) for row in page.rows
    ]
    resources = await svc.store.sessions.resources([r.id for r in recs])
    now = now_us()
    return {
        "data": [session_wire(r, resources[r.id], now) for r in recs],
        "next_page": page.next_cursor,
        "prev_page": page.prev_cursor,
    }


@router.get("/{session_id}")
async def retrieve(session_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    return await render(svc, await load_session(svc, who, session_id))


@router.post("/{session_id}")
async def update(session_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    body = await json_body(request)
    for key in body:
        if key not in UPDATE_FIELDS:
            raise InvalidRequest(f"{key}: unknown field")
    if "vault_ids" in body:
        raise InvalidRequest("vault_ids: cannot be changed after a session is created")
    check_metadata(body.get("metadata"), patch=True)
    title = check_title(body.get("title")) if "title" in body else None
    budget = check_budget(body.get("budget")) if "budget" in body else None
    await load_session(svc, who, session_id)
    async with svc.journal.transaction(session_id, who.workspace_id) as tx:
        rec = tx.session
        data = dict(rec.data)
        changed: dict[str, Any] = {}
        if rec.status == "terminated" and body:
            raise InvalidRequest(f"Session {session_id} is terminated and cannot be updated.")
        if "title" in body and title != data.get("title"):
            data["title"] = changed["title"] = title
        if "metadata" in body:
            merged = merge_metadata(data.get("metadata", {}), body["metadata"])
            if merged != data.get("metadata"):
                data["metadata"] = changed["metadata"] = merged
        if "budget" in body:
            if data.get("budget") is None and budget is not None:
                raise InvalidRequest(
                    "budget: a budget can only be set when the session is created",
                    error_code="budget_create_only",
                )
            if budget != data.get("budget"):
                data["budget"] = changed["budget"] = budget
        if "agent" in body:
            changed_agent = _updated_agent(rec, body["agent"])
            if changed_agent != data["agent"]:
                data["agent"] = changed["agent"] = changed_agent
        if changed:
            await tx.append(NewEvent(ev.SESSION_UPDATED, changed, thread_id=data.get("primary_thread_id")))
            tx.save(data=data)
    return await render(svc, await load_session(svc, who, session_id))


def _updated_agent(rec: SessionRecord, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest("agent: expected an object")
    for key in raw:
        if key not in ("tools", "mcp_servers"):
            raise InvalidRequest(f"agent.{key}: unknown field")
    if not rec.data.get("from_reference", True):
        raise InvalidRequest("agent: only sessions created from an agent reference can update their agent")
    if rec.status in ("running", "rescheduling"):
        raise InvalidRequest(
            f"Session {rec.id} is {rec.status}; interrupt it or wait for it to go idle "
            "before updating its agent."
        )
    agent = dict(rec.data["agent"])
    if "mcp_servers" in raw:
        agent["mcp_servers"] = agent_wire.normalize_mcp_servers(
            raw["mcp_servers"] or [], path="agent.mcp_servers"
        )
    if "tools" in raw or "mcp_servers" in raw:
        tools = raw["tools"] if "tools" in raw else agent["tools"]
        agent["tools"] = agent_wire.normalize_tools(tools or [], agent["mcp_servers"], path="agent.tools")
    return agent


@router.post("/{session_id}/archive")
async def archive(session_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    await load_session(svc, who, session_id)
    async with svc.journal.transaction(session_id, who.workspace_id) as tx:
        rec = tx.session
        if rec.archived_at is None:
            if rec.status in ("running", "rescheduling"):
                raise InvalidRequest(
                    f'Session {session_id} cannot be archived while its status is "{rec.status}". '
                    "Only pending or idle sessions may be archived."
                )
            thread = await svc.store.sessions.primary_thread(tx.conn, session_id)
            await tx.append(
                NewEvent(
                    ev.THREAD_TERMINATED,
                    {"session_thread_id": thread.id, "agent_name": rec.data["agent"]["name"]},
                    thread_id=thread.id,
                ),
                NewEvent(ev.STATUS_TERMINATED, {}, thread_id=thread.id),
            )
            await svc.store.sessions.save_thread(tx.conn, thread.id, status="terminated", at=tx.at)
            tx.save(status="terminated", archived_at=tx.at)
    await svc.executors.close(session_id)  # an archived session runs nothing more
    return await render(svc, await load_session(svc, who, session_id))


@router.delete("/{session_id}")
async def delete(session_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    svc = services(request)
    await load_session(svc, who, session_id)
    async with svc.store.db.write() as conn:
        rec = await svc.store.sessions.get_in(conn, who.workspace_id, session_id, lock=True)
        if rec is None:
            raise NotFound(f"Session {session_id} not found.")
        if rec.status in ("running", "rescheduling") or svc.scheduler.running(session_id):
            raise InvalidRequest(
                "Cannot delete session while it is running. "
                "Send an interrupt event or wait for the session to complete."
            )
        await svc.store.events.delete_session(conn, session_id)
        await svc.store.sessions.delete(conn, session_id)
    await svc.executors.close(session_id)
    # The log is gone; streams get a final `session.deleted` and close.
    svc.bus.publish(session_id, [Closed(new_id("event"), now_us())])
    # Session-scoped file copies and outputs go with the session.
    while True:
        scoped, _ = await svc.store.files.page(who.workspace_id, scope_id=session_id, limit=100, page=None)
        if not scoped:
            break
        for f in scoped:
            await svc.store.files.delete(who.workspace_id, f["id"], svc.settings.files_dir)
    return {"id": session_id, "type": "session_deleted"}
