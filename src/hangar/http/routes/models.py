"""Routes: ``/v1/models`` (list, newest first, with ``Page`` paging) and ``/v1/models/{id}``.

No ``anthropic-beta`` header is required here. The catalogue is the same for every workspace.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from hangar.errors import InvalidRequest, NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import query_int, query_list, services
from hangar.http.routing import api_router
from hangar.runtime.models.catalog import LIFECYCLES, ModelCatalog, UnknownCursor, catalog_for

router = api_router()

Caller = Annotated[Principal, Depends(principal)]
MAX_LIFECYCLES = 3


def _catalog(request: Request) -> ModelCatalog:
    return catalog_for(services(request).settings)


def _lifecycles(request: Request) -> set[str]:
    raw = query_list(request, "lifecycle")
    if not raw:
        return {"active", "deprecated"}
    if len(raw) > MAX_LIFECYCLES:
        raise InvalidRequest(f"lifecycle: at most {MAX_LIFECYCLES} values are allowed, got {len(raw)}")
    for i, value in enumerate(raw):
        if value not in LIFECYCLES:
            raise InvalidRequest(
                f"lifecycle[{i}]: {value!r} is not a valid value; expected one of {', '.join(LIFECYCLES)}"
            )
    return set(raw)


def _cursor(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


@router.get("/v1/models")
async def list_models(request: Request, _caller: Caller) -> dict[str, Any]:
    limit = query_int(request, "limit", 20, 1, 1000)
    lifecycles = _lifecycles(request)
    after_id, before_id = _cursor(request, "after_id"), _cursor(request, "before_id")
    if after_id is not None and before_id is not None:
        raise InvalidRequest("after_id: cannot be combined with before_id")
    try:
        page = _catalog(request).page(
            lifecycles=lifecycles, after_id=after_id, before_id=before_id, limit=limit
        )
    except UnknownCursor as exc:
        raise InvalidRequest(str(exc)) from exc
    return page.to_wire()


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, _caller: Caller) -> dict[str, Any]:
    found = _catalog(request).get(model_id)
    if found is None:
        raise NotFound(f"model: {model_id}")
    return found.to_wire()
