"""Routes: /v1/environments/{environment_id}/work (``client.beta.environments.work``).

Credentials per endpoint (API §1.3): EK = environment key, IT = the item's sessions token.

| endpoint            | accepts          |
|---------------------|------------------|
| GET  /poll          | EK               |
| POST /{wid}/ack     | EK               |
| POST /{wid}/heartbeat | EK, IT         |
| POST /{wid}/stop    | EK, IT, API key  |
| GET  (list)         | EK               |
| GET  /stats         | API key, EK      |
| GET  /{wid}         | API key          |
| POST /{wid}         | API key          |

``/poll`` and ``/stats`` are declared before ``/{work_id}`` so they are not taken for ids.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import StrictBool

from hangar.domain import work
from hangar.errors import InvalidRequest
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, query_int, services
from hangar.http.routing import api_router
from hangar.wire.common import Strict, parse

router = api_router(prefix="/v1/environments/{environment_id}/work")

Caller = Annotated[Principal, Depends(principal)]

EK = frozenset({work.ENVIRONMENT_KEY})
EK_OR_IT = frozenset({work.ENVIRONMENT_KEY, work.SESSIONS_TOKEN})
ANY_WORKER_OR_KEY = frozenset({work.ENVIRONMENT_KEY, work.SESSIONS_TOKEN, work.API_KEY})
API_KEY_OR_EK = frozenset({work.API_KEY, work.ENVIRONMENT_KEY})
API_KEY = frozenset({work.API_KEY})
MAX_RECLAIM_MS = 86_400_000


class StopBody(Strict):
    force: StrictBool | None = None


class UpdateBody(Strict):
    metadata: dict[str, Any]  # values checked by ``check_metadata`` (``invalid_metadata``)


async def _checked(
    request: Request,
    who: Principal,
    environment_id: str,
    accepted: frozenset[str],
    work_id: str | None = None,
) -> None:
    work.check_caller(
        who.kind,
        who.environment_id,
        environment_id,
        accepted,
        key_work_id=who.key_id if who.kind == work.SESSIONS_TOKEN else None,
        work_id=work_id,
    )
    await work.load_environment(services(request), who.workspace_id, environment_id)


def _optional_int(request: Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return query_int(request, name, 0, lo, hi)


def _worker_id(request: Request) -> str | None:
    raw = request.headers.get("anthropic-worker-id")
    if raw is None or not raw.strip():
        return None
    if len(raw) > work.MAX_WORKER_ID:
        raise InvalidRequest(f"Anthropic-Worker-ID: at most {work.MAX_WORKER_ID} characters")
    return raw.strip()


@router.get("/poll")
async def poll(environment_id: str, request: Request, who: Caller) -> JSONResponse:
    await _checked(request, who, environment_id, EK)
    found = await work.poll(
        services(request),
        who.workspace_id,
        environment_id,
        block_ms=_optional_int(request, "block_ms", 1, 999),
        reclaim_older_than_ms=query_int(request, "reclaim_older_than_ms", 5000, 0, MAX_RECLAIM_MS),
        worker_id=_worker_id(request),
    )
    # An empty queue is a 200 with the JSON body ``null`` (a 204 would crash the SDK).
    return JSONResponse(found)


@router.get("/stats")
async def stats(environment_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, API_KEY_OR_EK)
    return await work.stats(services(request), who.workspace_id, environment_id)


@router.get("")
async def list_work(environment_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, EK)
    return await work.list_page(
        services(request),
        who.workspace_id,
        environment_id,
        limit=query_int(request, "limit", 20, 1, 100),
        page=request.query_params.get("page") or None,
    )


@router.post("/{work_id}/ack")
async def ack(environment_id: str, work_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, EK)
    return await work.ack(services(request), who.workspace_id, environment_id, work_id)


@router.post("/{work_id}/heartbeat")
async def heartbeat(environment_id: str, work_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, EK_OR_IT, work_id)
    expected = request.query_params.get("expected_last_heartbeat")
    return await work.heartbeat(
        services(request),
        who.workspace_id,
        environment_id,
        work_id,
        expected_last_heartbeat=expected if expected else None,
        desired_ttl_seconds=_optional_int(
            request, "desired_ttl_seconds", work.MIN_TTL_SECONDS, work.MAX_TTL_SECONDS
        ),
    )


@router.post("/{work_id}/stop")
async def stop(environment_id: str, work_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, ANY_WORKER_OR_KEY, work_id)
    body = parse(StopBody, await json_body(request))
    return await work.stop(
        services(request),
        who.workspace_id,
        environment_id,
        work_id,
        force=bool(body.force),
        by_worker=who.kind != work.API_KEY,
    )


@router.get("/{work_id}")
async def retrieve(environment_id: str, work_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, API_KEY)
    return await work.retrieve(services(request), who.workspace_id, environment_id, work_id)


@router.post("/{work_id}")
async def update(environment_id: str, work_id: str, request: Request, who: Caller) -> dict[str, Any]:
    await _checked(request, who, environment_id, API_KEY)
    body = parse(UpdateBody, await json_body(request))
    return await work.update(services(request), who.workspace_id, environment_id, work_id, body.metadata)
