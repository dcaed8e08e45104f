"""Self-hosted work queue rules (API §1.3 and §7.1, BEHAVIOUR §15).

A *work item* stands for "a worker should serve this session". One is queued when a session is
created on a ``self_hosted`` environment, and again when such a session receives input while no
item of it is live. The life of an item::

    queued ──poll──▶ (handed out, secret minted) ──ack──▶ starting ──heartbeat──▶ active
      ▲                    │ not acked within reclaim_older_than_ms: claimable again
      └──── lease lapses (starting/active): requeued, its sessions token revoked
    stop: force, or by the worker itself (environment key or sessions token), or while queued
          ──▶ stopped; by an API key without force while held ──▶ stopping (the worker sees it
          on its next heartbeat and stops the item; a lapsed stopping lease ends stopped)

**Credentials.** The environment key (EK, ``hangar keys create --environment``) polls, acks,
lists and heartbeats. The *sessions token* (IT) minted at each poll travels in the item's
``secret`` (URL-safe base64 of ``{"sessions_token": …}``); only its SHA-256 is stored. It may read
the item's session, list and stream its events, post events to it, and heartbeat or stop its own
item; nothing else. A new poll of the same item replaces it; stopping or requeueing revokes it.

**Leases.** ``ack`` starts a lease of ``ttl_seconds`` (``Settings.work_lease_ttl_seconds``,
default 90 s, the SDK worker's own assumption); each heartbeat renews it (``desired_ttl_seconds``
1-3600 changes the TTL). A heartbeat must echo the previous ``last_heartbeat`` exactly
(``NO_HEARTBEAT`` for the first of a lease), else 412 ``heartbeat_precondition_failed`` with the
server's ``current_state``; the value is not compared once the item is stopping or stopped.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hangar.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, PreconditionFailed
from hangar.services import Services
from hangar.store.db import Conn, now_us
from hangar.store.keys import hash_key
from hangar.store.sessions import SessionRecord
from hangar.store.work import BACKSTOP_S, WorkRecord
from hangar.wire.common import check_metadata, merge_metadata, ts

log = logging.getLogger(__name__)

WORK_TOKEN_PREFIX = "sk-hangar-work-"  # noqa: S105 (a prefix, not a secret)
NO_HEARTBEAT = "NO_HEARTBEAT"
MIN_TTL_SECONDS, MAX_TTL_SECONDS = 1, 3600
MAX_WORKER_ID = 255

# Credential kinds (``Principal.kind``).
API_KEY, ENVIRONMENT_KEY, SESSIONS_TOKEN = "admin", "environment", "work"

# The routes a sessions token reaches, and which path parameter ties each to the item.
_TOKEN_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/v1/sessions/{session_id}"): "session",
    ("GET", "/v1/sessions/{session_id}/events"): "session",
    ("POST", "/v1/sessions/{session_id}/events"): "session",
    ("GET", "/v1/sessions/{session_id}/events/stream"): "session",
    ("POST", "/v1/environments/{environment_id}/work/{work_id}/heartbeat"): "work",
    ("POST", "/v1/environments/{environment_id}/work/{work_id}/stop"): "work",
}


# --- the sessions token ----------------------------------------------------------------------


def is_work_token(token: str) -> bool:
    return token.startswith(WORK_TOKEN_PREFIX)


def mint_token() -> tuple[str, str]:
    """A new sessions token and the hash that is stored."""
    token = WORK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_key(token)


def encode_secret(token: str) -> str:
    """The item's ``secret``: URL-safe base64 (unpadded) of ``{"sessions_token": token}``."""
    raw = json.dumps({"sessions_token": token}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def work_token_item(svc: Services, token: str) -> WorkRecord | None:
    """The item whose live sessions token is ``token``, or ``None``."""
    if not is_work_token(token):
        return None
    return await svc.store.work.authenticate(hash_key(token))


def token_allows(item: WorkRecord, method: str, route: str | None, params: Mapping[str, Any]) -> bool:
    """May ``item``'s sessions token call ``method route`` with these path parameters?"""
    scope = _TOKEN_ROUTES.get((method.upper(), route or ""))
    if scope == "session":
        return params.get("session_id") == item.session_id
    if scope == "work":
        return params.get("work_id") == item.id and params.get("environment_id") == item.environment_id
    return False


def check_caller(
    kind: str,
    key_environment_id: str | None,
    environment_id: str,
    accepted: frozenset[str],
    *,
    key_work_id: str | None = None,
    work_id: str | None = None,
) -> None:
    """Refuse (403) a credential the endpoint does not take, or one bound elsewhere."""
    if kind not in accepted:
        if kind == API_KEY:
            raise PermissionDenied("This endpoint does not accept an API key; use the environment key.")
        if kind == ENVIRONMENT_KEY:
            raise PermissionDenied("This endpoint does not accept an environment key; use an API key.")
        raise PermissionDenied("A work item's sessions token cannot be used for this endpoint.")
    if kind in (ENVIRONMENT_KEY, SESSIONS_TOKEN) and key_environment_id != environment_id:
        raise PermissionDenied(
            f"This credential belongs to environment {key_environment_id}, not {environment_id}."
        )
    if kind == SESSIONS_TOKEN and key_work_id != work_id:
        raise PermissionDenied(f"This sessions token belongs to work {key_work_id}, not {work_id}.")


# --- queueing --------------------------------------------------------------------------------


async def load_environment(svc: Services, workspace_id: str, environment_id: str) -> dict[str, Any]:
    """The self-hosted environment the queue belongs to (404 / 400 otherwise)."""
    env = await svc.store.environments.get(workspace_id, environment_id)
    if env is None:
        raise NotFound(f"Environment {environment_id} not found.", error_code="environment_not_found")
    if (env.get("config") or {}).get("type") != "self_hosted":
        raise InvalidRequest(
            f"Environment {environment_id} is not self-hosted; only self_hosted environments have "
            "a work queue."
        )
    return env


async def enqueue_session(
    svc: Services, conn: Conn, *, workspace_id: str, environment_id: str, session_id: str, at: int
) -> WorkRecord:
    """Queue the first item of a new self-hosted session, in the caller's transaction."""
    return await svc.store.work.enqueue(
        conn,
        workspace_id=workspace_id,
        environment_id=environment_id,
        session_id=session_id,
        ttl_seconds=svc.settings.work_lease_ttl_seconds,
        at=at,
    )


async def ensure_work(svc: Services, workspace_id: str, session_id: str) -> WorkRecord | None:
    """Queue an item for a self-hosted session that has no live one; the new item or ``None``."""
    store = svc.store
    async with store.db.read() as conn:
        if await store.work.live_for_session(conn, session_id, now_us()) is not None:
            return None
    async with store.db.write() as conn:
        session = await store.sessions.get_in(conn, workspace_id, session_id, lock=True)
        if (
            session is None
            or not session.data.get("self_hosted")
            or session.archived_at is not None
            or session.status == "terminated"
        ):
            return None
        at = now_us()
        if await store.work.live_for_session(conn, session_id, at) is not None:
            return None
        item = await store.work.enqueue(
            conn,
            workspace_id=workspace_id,
            environment_id=session.environment_id,
            session_id=session_id,
            ttl_seconds=svc.settings.work_lease_ttl_seconds,
            at=at,
        )
    log.info("work queued for a dormant session", extra={"session_id": session_id, "work_id": item.id})
    return item


async def wake_for_input(
    svc: Services,
    workspace_id: str,
    session_id: str,
    event_types: list[str],
    session: SessionRecord | None = None,
) -> WorkRecord | None:
    """Input reached a session: a dormant self-hosted one gets a new work item. ``session``, when
    the caller already read it, spares a read."""
    if all(t == "user.interrupt" for t in event_types):
        return None
    if session is None:
        session = await svc.store.sessions.get(workspace_id, session_id)
    if session is None or not session.data.get("self_hosted"):
        return None
    return await ensure_work(svc, workspace_id, session_id)


async def _requeue_if_unfinished(svc: Services, item: WorkRecord) -> None:
    """A worker stopped its item while the session still needs one (a turn running, tool calls
    held for the worker, or input not consumed yet): queue another, so the session is not left
    waiting. This closes the race of a message arriving just as the worker leaves."""
    session = await svc.store.sessions.get(item.workspace_id, item.session_id)
    if session is None:
        return
    held = any(c.get("remote") and c.get("state") == "held" for c in session.data.get("calls") or ())
    if (
        session.status in ("running", "rescheduling")
        or held
        or await svc.store.events.pending(item.session_id)
    ):
        await ensure_work(svc, item.workspace_id, item.session_id)


# --- the endpoints ---------------------------------------------------------------------------


def _not_found(work_id: str) -> NotFound:
    return NotFound(f"Work {work_id} not found.")


async def poll(
    svc: Services,
    workspace_id: str,
    environment_id: str,
    *,
    block_ms: int | None,
    reclaim_older_than_ms: int,
    worker_id: str | None,
) -> dict[str, Any] | None:
    """Claim the oldest claimable item (with its ``secret``), waiting up to ``block_ms``."""
    work = svc.store.work
    reclaim_us = reclaim_older_than_ms * 1000
    deadline = None if block_ms is None else time.monotonic() + block_ms / 1000
    while True:
        token, token_hash = mint_token()
        item = await work.claim(
            workspace_id, environment_id, reclaim_us=reclaim_us, worker_id=worker_id, token_hash=token_hash
        )
        if item is not None:
            log.info(
                "work handed out",
                extra={"work_id": item.id, "session_id": item.session_id, "worker_id": worker_id},
            )
            return item.wire(secret=encode_secret(token))
        while True:
            remaining = 0.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            await work.wait_for_work(environment_id, min(remaining, BACKSTOP_S))
            if await work.has_claimable(environment_id, reclaim_us):
                break


def _acked(item: WorkRecord, at: int) -> WorkRecord:
    if item.state != "queued":
        raise Conflict(f"Work {item.id} cannot be acknowledged: its state is {item.state}.")
    if item.polled_at is None:
        raise Conflict(f"Work {item.id} cannot be acknowledged before a poll has handed it out.")
    return replace(
        item,
        state="starting",
        acknowledged_at=at,
        lease_heartbeat_at=None,
        lease_expires_at=at + item.ttl_seconds * 1_000_000,
    )


async def ack(svc: Services, workspace_id: str, environment_id: str, work_id: str) -> dict[str, Any]:
    item = await svc.store.work.change(workspace_id, environment_id, work_id, _acked)
    if item is None:
        raise _not_found(work_id)
    return item.wire()


def _lease_state(item: WorkRecord) -> dict[str, Any]:
    return {
        "state": item.state,
        "ttl_seconds": item.ttl_seconds,
        "last_heartbeat": ts(item.lease_heartbeat_at),
        "lease_extended": False,
    }


def _beat(expected: str | None, desired_ttl: int | None) -> Any:
    def change(item: WorkRecord, at: int) -> WorkRecord:
        if item.state in ("stopping", "stopped"):
            return item  # not compared, not extended: the worker shuts down
        current = ts(item.lease_heartbeat_at)
        if item.state == "queued":
            matches = False
        elif expected is None:
            matches = True
        elif expected == NO_HEARTBEAT:
            matches = current is None
        else:
            matches = expected == current
        if not matches:
            raise PreconditionFailed(
                "expected_last_heartbeat does not match the stored heartbeat, so another worker may "
                "hold the lease."
                if item.state != "queued"
                else f"Work {item.id} holds no lease (state queued): it was never acknowledged or "
                "its lease lapsed.",
                error_code="heartbeat_precondition_failed",
                current_state=_lease_state(item),
            )
        ttl = desired_ttl if desired_ttl is not None else item.ttl_seconds
        beat = at if item.lease_heartbeat_at is None else max(at, item.lease_heartbeat_at + 1)
        return replace(
            item,
            state="active",
            started_at=item.started_at if item.started_at is not None else beat,
            latest_heartbeat_at=beat,
            lease_heartbeat_at=beat,
            lease_expires_at=beat + ttl * 1_000_000,
            ttl_seconds=ttl,
        )

    return change


async def heartbeat(
    svc: Services,
    workspace_id: str,
    environment_id: str,
    work_id: str,
    *,
    expected_last_heartbeat: str | None,
    desired_ttl_seconds: int | None,
) -> dict[str, Any]:
    """Renew the lease → ``BetaSelfHostedWorkHeartbeatResponse``."""
    item = await svc.store.work.change(
        workspace_id, environment_id, work_id, _beat(expected_last_heartbeat, desired_ttl_seconds)
    )
    if item is None:
        raise _not_found(work_id)
    return {
        "type": "work_heartbeat",
        "last_heartbeat": ts(item.lease_heartbeat_at) or "",
        "lease_extended": item.state == "active",
        "state": item.state,
        "ttl_seconds": item.ttl_seconds,
    }


def _stopped(force: bool, by_worker: bool) -> Any:
    def change(item: WorkRecord, at: int) -> WorkRecord:
        if item.state == "stopped":
            raise Conflict(f"Work {item.id} is already stopped.")
        if force or by_worker or item.state == "queued":
            return replace(
                item,
                state="stopped",
                stop_requested_at=item.stop_requested_at if item.stop_requested_at is not None else at,
                stopped_at=at,
                token_hash=None,
            )
        if item.state == "stopping":
            return item
        return replace(item, state="stopping", stop_requested_at=at)

    return change


async def stop(
    svc: Services, workspace_id: str, environment_id: str, work_id: str, *, force: bool, by_worker: bool
) -> dict[str, Any]:
    """Stop an item. The worker's own stop (or ``force``) ends it at once; an API key's graceful
    stop of a held item asks the worker to drain (``stopping``)."""
    item = await svc.store.work.change(workspace_id, environment_id, work_id, _stopped(force, by_worker))
    if item is None:
        raise _not_found(work_id)
    log.info("work stop", extra={"work_id": work_id, "state": item.state, "force": force})
    if by_worker and item.state == "stopped":
        await _requeue_if_unfinished(svc, item)
    return item.wire()


async def update(
    svc: Services, workspace_id: str, environment_id: str, work_id: str, metadata: dict[str, str | None]
) -> dict[str, Any]:
    check_metadata(metadata, patch=True)

    def change(item: WorkRecord, at: int) -> WorkRecord:
        return replace(item, metadata=merge_metadata(item.metadata, metadata))

    item = await svc.store.work.change(workspace_id, environment_id, work_id, change)
    if item is None:
        raise _not_found(work_id)
    return item.wire()


async def retrieve(svc: Services, workspace_id: str, environment_id: str, work_id: str) -> dict[str, Any]:
    item = await svc.store.work.get(workspace_id, environment_id, work_id)
    if item is None:
        raise _not_found(work_id)
    return item.wire()


async def list_page(
    svc: Services, workspace_id: str, environment_id: str, *, limit: int, page: str | None
) -> dict[str, Any]:
    items, next_page = await svc.store.work.page(workspace_id, environment_id, limit=limit, page=page)
    return {"data": [i.wire() for i in items], "next_page": next_page}


async def stats(svc: Services, workspace_id: str, environment_id: str) -> dict[str, Any]:
    found = await svc.store.work.stats(workspace_id, environment_id)
    return {
        "type": "work_queue_stats",
        "depth": found.depth,
        "pending": found.pending,
        "oldest_queued_at": ts(found.oldest_queued_at),
        "workers_polling": found.workers_polling,
    }
