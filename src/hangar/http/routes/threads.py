"""Routes: /v1/sessions/{id}/threads (list, retrieve, archive, events, stream)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse

from hangar.errors import InvalidRequest, NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import query_int, query_list, services
from hangar.http.routes.events import SSE_HEADERS, resume_point
from hangar.http.routes.sessions import load_session
from hangar.http.routing import api_router
from hangar.http.sse import event_stream
from hangar.services import Services
from hangar.store.db import now_us
from hangar.store.sessions import SessionRecord, ThreadRecord
from hangar.wire.sessions import STATUSES, thread_wire

router = api_router(prefix="/v1/sessions/{session_id}/threads")


async def load_thread(
    svc: Services, who: Principal, session_id: str, thread_id: str
) -> tuple[ThreadRecord, SessionRecord]:
    session = await load_session(svc, who, session_id)
    thread = await svc.store.sessions.thread(session_id, thread_id)
    if thread is None:
        raise NotFound(f"Thread {thread_id} not found.")
    return thread, session


@router.get("")
async def list_threads(
    session_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    session = await load_session(svc, who, session_id)
    statuses = tuple(query_list(request, "statuses"))
    for s in statuses:
        if s not in STATUSES:
            raise InvalidRequest(
                f'statuses: "{s}" is not a valid value; expected one of {", ".join(STATUSES)}'
            )
    limit = query_int(request, "limit", 1000, 1, 1000)
    now = now_us()
    threads = [
        t
        for t in await svc.store.sessions.threads_of(session_id)
        if not statuses or thread_wire(t, now, session)["status"] in statuses
    ]
    start = 0
    page = request.query_params.get("page")
    if page:
        ids = [t.id for t in threads]
        if page not in ids:
            raise InvalidRequest("invalid page cursor")
        start = ids.index(page) + 1
    chunk = threads[start : start + limit]
    more = start + limit < len(threads)
    now = now_us()
    return {
        "data": [thread_wire(t, now) for t in chunk],
        "next_page": chunk[-1].id if more and chunk else None,
    }


@router.get("/{thread_id}")
async def retrieve(
    session_id: str, thread_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    thread, session = await load_thread(svc, who, session_id, thread_id)
    return thread_wire(thread, now_us(), session)


@router.post("/{thread_id}/archive")
async def archive(
    session_id: str, thread_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    thread, _ = await load_thread(svc, who, session_id, thread_id)
    if thread.parent_thread_id is None:
        raise InvalidRequest("The primary thread cannot be archived; archive the session instead.")
    if thread.archived_at is None:  # pragma: no cover - child threads arrive with multiagent support
        async with svc.store.db.write() as conn:
            await svc.store.sessions.save_thread(conn, thread_id, status="terminated", archived_at=now_us())
    thread, session = await load_thread(svc, who, session_id, thread_id)
    return thread_wire(thread, now_us(), session)


@router.get("/{thread_id}/events")
async def thread_events(
    session_id: str, thread_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    await load_thread(svc, who, session_id, thread_id)
    rows, next_page = await svc.store.events.page(
        session_id,
        types=[],
        thread_id=thread_id,
        processed_range={},
        order="asc",
        limit=query_int(request, "limit", 1000, 1, 1000),
        page=request.query_params.get("page") or None,
    )
    return {"data": [e.wire() for e in rows], "next_page": next_page}


@router.get("/{thread_id}/stream")
async def thread_stream(
    session_id: str, thread_id: str, request: Request, who: Principal = Depends(principal)
) -> StreamingResponse:
    svc = services(request)
    if query_list(request, "event_deltas"):
        raise InvalidRequest("event_deltas: previews are available on the session stream only")
    await load_thread(svc, who, session_id, thread_id)
    after = await resume_point(svc, session_id, request)
    return StreamingResponse(
        event_stream(
            svc, session_id, after_seq=after, previews=frozenset(), include=lambda e: e.thread_id == thread_id
        ),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
