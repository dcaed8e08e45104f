"""Routes: /v1/sessions/{id}/events (list, send) and /events/stream (SSE)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse

from hangar.domain.work import wake_for_input
from hangar.errors import Conflict, InvalidRequest, NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, query_int, query_list, query_order, services
from hangar.http.routes.sessions import load_session
from hangar.http.routing import api_router
from hangar.http.sse import event_stream
from hangar.runtime.journal import Tx
from hangar.runtime.loop import Taken
from hangar.services import Services
from hangar.store.events import NewEvent, StoredEvent
from hangar.store.sessions import SessionRecord
from hangar.wire import events as ev
from hangar.wire.common import parse_ts

router = api_router(prefix="/v1/sessions/{session_id}")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def processed_range(request: Request) -> dict[str, int]:
    out = {}
    for op in ("gt", "gte", "lt", "lte"):
        raw = request.query_params.get(f"created_at[{op}]")
        if raw:
            out[op] = parse_ts(raw, f"created_at[{op}]")
    return out


def event_types(request: Request) -> list[str]:
    types = query_list(request, "types")
    for t in types:
        if t not in ev.FILTERABLE_TYPES:
            raise InvalidRequest(f'types: "{t}" is not a valid value')
    return types


@router.get("/events")
async def list_events(
    session_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    await load_session(svc, who, session_id)
    rows, next_page = await svc.store.events.page(
        session_id,
        types=event_types(request),
        processed_range=processed_range(request),
        order=query_order(request, "asc"),
        limit=query_int(request, "limit", 1000, 1, 1000),
        page=request.query_params.get("page") or None,
    )
    return {"data": [e.wire() for e in rows], "next_page": next_page}


@router.post("/events")
async def send_events(
    session_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    svc = services(request)
    body = await json_body(request)
    for key in body:
        if key != "events":
            raise InvalidRequest(f"{key}: unknown field")
    raw = body.get("events")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("events: expected a non-empty array")
    if len(raw) > ev.MAX_EVENTS_PER_REQUEST:
        raise InvalidRequest(f"events: at most {ev.MAX_EVENTS_PER_REQUEST} events per request")
    parsed = [ev.parse_event(item, f"events[{i}]") for i, item in enumerate(raw)]
    system = [i for i, e in enumerate(parsed) if e.type == ev.SYSTEM_MESSAGE]
    if len(system) > 1:
        raise InvalidRequest("events: at most one system.message per request")
    if system and (system[0] != len(parsed) - 1 or len(parsed) < 2):
        raise InvalidRequest(
            f"events[{system[0]}]: a system.message must be the last event, right after "
            "the user.message, user.tool_result or user.custom_tool_result it accompanies"
        )

    interrupt = any(e.type == ev.USER_INTERRUPT for e in parsed)

    # The checks run inside the transaction that appends, on the row it appends to. Input for
    # an idle session is taken in by the same transaction (`Scheduler.take_in`).
    async def append(tx: Tx) -> tuple[SessionRecord, list[StoredEvent], Taken | None]:  # may run twice
        await _check_references(svc, who, tx.session, parsed)
        stored = await _append_inputs(tx, parsed)
        taken = None if interrupt else await svc.scheduler.take_in(tx, stored)
        return tx.session, stored, taken

    session, stored, taken = await svc.journal.run(session_id, append, who.workspace_id)
    if taken is not None:
        svc.scheduler.wake(session_id, taken)  # before anything is awaited: see take_in
    await wake_for_input(svc, who.workspace_id, session_id, [e.type for e in parsed], session)
    if interrupt:
        await svc.scheduler.interrupt(session_id)
    elif taken is None:
        svc.scheduler.wake(session_id)
    return {"data": [e.wire() for e in stored]}


async def _check_references(
    svc: Services, who: Principal, session: SessionRecord, parsed: list[ev.EventParam]
) -> None:
    """Results and confirmations must answer a call of this session, of the right kind."""
    session_id = session.id
    for i, e in enumerate(parsed):
        if isinstance(e, ev.UserToolConfirmation):
            if e.deny_message is not None and e.result != "deny":
                raise InvalidRequest(f"events[{i}].deny_message: only allowed when result is deny")
            await _expect_call(
                svc,
                session_id,
                e.tool_use_id,
                (ev.AGENT_TOOL_USE, ev.AGENT_MCP_TOOL_USE),
                f"events[{i}].tool_use_id",
            )
        elif isinstance(e, ev.UserCustomToolResult):
            await _expect_call(
                svc,
                session_id,
                e.custom_tool_use_id,
                (ev.AGENT_CUSTOM_TOOL_USE,),
                f"events[{i}].custom_tool_use_id",
            )
        elif isinstance(e, ev.UserToolResult):
            env = await svc.store.environments.get(who.workspace_id, session.environment_id)
            if env is None or env["config"].get("type") != "self_hosted":
                raise InvalidRequest(
                    f"events[{i}].type: user.tool_result is only valid on self-hosted environments"
                )
            await _expect_call(
                svc, session_id, e.tool_use_id, (ev.AGENT_TOOL_USE,), f"events[{i}].tool_use_id"
            )
        elif (
            isinstance(e, ev.SystemMessage)
            and session.status == "idle"
            and any(call.get("state") == "held" for call in session.data.get("calls") or ())
        ):
            raise InvalidRequest(
                f"events[{i}]: a system.message cannot be sent while the session waits for tool "
                "confirmations or results (requires_action)"
            )


async def _expect_call(
    svc: Services, session_id: str, event_id: str, types: tuple[str, ...], path: str
) -> None:
    found = await svc.store.events.get(session_id, event_id)
    if found is None or found.type not in types:
        raise NotFound(f"{path}: no {' or '.join(types)} event {event_id} in session {session_id}")


async def _append_inputs(tx: Tx, parsed: list[ev.EventParam]) -> list[StoredEvent]:
    if tx.session.archived_at is not None or tx.session.status == "terminated":
        raise Conflict(f"Session {tx.session.id} is archived and does not accept events.")
    thread_id = tx.session.data.get("primary_thread_id")
    for i, e in enumerate(parsed):
        sid = getattr(e, "session_thread_id", None)
        if sid is not None and sid != thread_id:
            raise NotFound(f"events[{i}].session_thread_id: thread {sid} not found")
    return await tx.append(
        *[
            # Interrupts take effect at once; other inputs queue until the loop consumes them.
            NewEvent(e.type, ev.event_body(e), processed=e.type == ev.USER_INTERRUPT, thread_id=thread_id)
            for e in parsed
        ]
    )


def stream_start(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("after_id") or None


def preview_kinds(request: Request) -> frozenset[str]:
    kinds = query_list(request, "event_deltas")
    for k in kinds:
        if k not in ev.PREVIEWABLE:
            raise InvalidRequest(
                f'event_deltas: "{k}" is not a valid value; expected one of agent.message, agent.thinking'
            )
    return frozenset(kinds)


async def resume_point(svc: Services, session_id: str, request: Request) -> int | None:
    after = stream_start(request)
    if after is None:
        return None
    seq = await svc.store.events.seq_of(session_id, after)
    if seq is None:
        raise InvalidRequest(f"Last-Event-ID: event {after} is not in session {session_id}")
    return seq


@router.get("/events/stream")
async def stream(session_id: str, request: Request, who: Principal = Depends(principal)) -> StreamingResponse:
    svc = services(request)
    previews = preview_kinds(request)
    await load_session(svc, who, session_id)
    after = await resume_point(svc, session_id, request)
    return StreamingResponse(
        event_stream(svc, session_id, after_seq=after, previews=previews),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
