"""Routes: /v1/tunnels and /v1/tunnels/{tunnel_id}/certificates (``client.beta.tunnels``), and
the WebSocket ``hangar tunnel`` clients dial (``/v1/tunnels/connect``, see ``hangar.tunnel``)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request, WebSocket

from hangar.http.auth import Principal, admin
from hangar.http.deps import json_body, page_envelope, query_bool, query_int, services
from hangar.http.routing import api_router
from hangar.tunnel.hub import TunnelHub
from hangar.tunnel.protocol import CONNECT_PATH
from hangar.wire import tunnels as wire

router = api_router()

Caller = Annotated[Principal, Depends(admin)]


def tunnel_hub(app: Any) -> TunnelHub:
    return cast(TunnelHub, app.state.tunnels)


def _list_args(request: Request) -> dict[str, Any]:
    return {
        "include_archived": query_bool(request, "include_archived"),
        "limit": query_int(request, "limit", 20, 1, wire.LIST_LIMIT_MAX),
        "page": request.query_params.get("page") or None,
    }


# -- the relay's WebSocket (declared first: it must not be read as a tunnel id) -------------------


@router.websocket(CONNECT_PATH)
async def connect(websocket: WebSocket) -> None:
    await tunnel_hub(websocket.app).serve(websocket)


# -- tunnels ------------------------------------------------------------------------------------


@router.post("/v1/tunnels")
async def create_tunnel(request: Request, caller: Caller) -> dict[str, Any]:
    new = wire.parse_tunnel_create(await json_body(request))
    svc = services(request)
    return await svc.store.tunnels.create(
        caller.workspace_id, new.display_name, parent_domain=tunnel_hub(request.app).parent_domain
    )


@router.get("/v1/tunnels")
async def list_tunnels(request: Request, caller: Caller) -> dict[str, Any]:
    data, next_page = await services(request).store.tunnels.page(caller.workspace_id, **_list_args(request))
    return page_envelope(data, next_page)


@router.get("/v1/tunnels/{tunnel_id}")
async def retrieve_tunnel(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).store.tunnels.get(caller.workspace_id, tunnel_id)


@router.post("/v1/tunnels/{tunnel_id}/archive")
async def archive_tunnel(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    archived = await services(request).store.tunnels.archive(
        caller.workspace_id, tunnel_id, key_id=caller.key_id
    )
    await tunnel_hub(request.app).disconnect(tunnel_id)
    return archived


@router.post("/v1/tunnels/{tunnel_id}/reveal_token")
async def reveal_token(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).store.tunnels.reveal_token(
        caller.workspace_id, tunnel_id, key_id=caller.key_id
    )


@router.post("/v1/tunnels/{tunnel_id}/rotate_token")
async def rotate_token(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    body = wire.parse_token_rotate(await json_body(request))
    return await services(request).store.tunnels.rotate_token(
        caller.workspace_id, tunnel_id, reason=body.reason, key_id=caller.key_id
    )


# -- certificates -------------------------------------------------------------------------------


@router.post("/v1/tunnels/{tunnel_id}/certificates")
async def create_certificate(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    new = wire.parse_certificate_create(await json_body(request))
    created = await services(request).store.tunnels.add_certificate(caller.workspace_id, tunnel_id, new)
    await tunnel_hub(request.app).certificates_changed(tunnel_id)
    return created


@router.get("/v1/tunnels/{tunnel_id}/certificates")
async def list_certificates(tunnel_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    data, next_page = await services(request).store.tunnels.page_certificates(
        caller.workspace_id, tunnel_id, **_list_args(request)
    )
    return page_envelope(data, next_page)


@router.get("/v1/tunnels/{tunnel_id}/certificates/{certificate_id}")
async def retrieve_certificate(
    tunnel_id: str, certificate_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    return await services(request).store.tunnels.get_certificate(
        caller.workspace_id, tunnel_id, certificate_id
    )


@router.post("/v1/tunnels/{tunnel_id}/certificates/{certificate_id}/archive")
async def archive_certificate(
    tunnel_id: str, certificate_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    archived = await services(request).store.tunnels.archive_certificate(
        caller.workspace_id, tunnel_id, certificate_id
    )
    await tunnel_hub(request.app).certificates_changed(tunnel_id)
    return archived
