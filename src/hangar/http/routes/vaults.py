"""Routes: /v1/vaults and /v1/vaults/{vault_id}/credentials (``client.beta.vaults``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from hangar.domain.vaults import validate_credential
from hangar.errors import NotFound
from hangar.http.auth import Principal, principal
from hangar.http.deps import json_body, page_envelope, query_bool, query_int, services
from hangar.http.routing import api_router
from hangar.wire import vaults as wire

router = api_router()

Caller = Annotated[Principal, Depends(principal)]


def _vault_not_found(vault_id: str) -> NotFound:
    return NotFound(f"Vault {vault_id} not found.")


def _credential_not_found(credential_id: str) -> NotFound:
    return NotFound(f"Credential {credential_id} not found.")


# -- vaults -------------------------------------------------------------------------------------


@router.post("/v1/vaults")
async def create_vault(request: Request, caller: Caller) -> dict[str, Any]:
    new = wire.parse_vault_create(await json_body(request))
    return await services(request).store.vaults.create_vault(caller.workspace_id, new)


@router.get("/v1/vaults")
async def list_vaults(request: Request, caller: Caller) -> dict[str, Any]:
    data, next_page = await services(request).store.vaults.page_vaults(
        caller.workspace_id,
        include_archived=query_bool(request, "include_archived"),
        limit=query_int(request, "limit", 20, 1, 100),
        page=request.query_params.get("page") or None,
    )
    return page_envelope(data, next_page)


@router.get("/v1/vaults/{vault_id}")
async def retrieve_vault(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    found = await services(request).store.vaults.get_vault(caller.workspace_id, vault_id)
    if found is None:
        raise _vault_not_found(vault_id)
    return found


@router.post("/v1/vaults/{vault_id}")
async def update_vault(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    patch = wire.parse_vault_update(await json_body(request))
    return await services(request).store.vaults.update_vault(caller.workspace_id, vault_id, patch)


@router.post("/v1/vaults/{vault_id}/archive")
async def archive_vault(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).store.vaults.archive_vault(caller.workspace_id, vault_id)


@router.delete("/v1/vaults/{vault_id}")
async def delete_vault(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    if not await services(request).store.vaults.delete_vault(caller.workspace_id, vault_id):
        raise _vault_not_found(vault_id)
    return wire.vault_deleted(vault_id)


# -- credentials --------------------------------------------------------------------------------


@router.post("/v1/vaults/{vault_id}/credentials")
async def create_credential(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    new = wire.parse_credential_create(await json_body(request))
    return await services(request).store.vaults.create_credential(caller.workspace_id, vault_id, new)


@router.get("/v1/vaults/{vault_id}/credentials")
async def list_credentials(vault_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    data, next_page = await services(request).store.vaults.page_credentials(
        caller.workspace_id,
        vault_id,
        include_archived=query_bool(request, "include_archived"),
        limit=query_int(request, "limit", 20, 1, 100),
        page=request.query_params.get("page") or None,
    )
    return page_envelope(data, next_page)


@router.get("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def retrieve_credential(
    vault_id: str, credential_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    found = await services(request).store.vaults.get_credential(caller.workspace_id, vault_id, credential_id)
    if found is None:
        raise _credential_not_found(credential_id)
    return found


@router.post("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def update_credential(
    vault_id: str, credential_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    patch = wire.parse_credential_update(await json_body(request))
    updated = await services(request).store.vaults.update_credential(
        caller.workspace_id, vault_id, credential_id, patch
    )
    if updated is None:
        raise _credential_not_found(credential_id)
    return updated


@router.post("/v1/vaults/{vault_id}/credentials/{credential_id}/archive")
async def archive_credential(
    vault_id: str, credential_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    archived = await services(request).store.vaults.archive_credential(
        caller.workspace_id, vault_id, credential_id
    )
    if archived is None:
        raise _credential_not_found(credential_id)
    return archived


@router.delete("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def delete_credential(
    vault_id: str, credential_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    if not await services(request).store.vaults.delete_credential(
        caller.workspace_id, vault_id, credential_id
    ):
        raise _credential_not_found(credential_id)
    return wire.credential_deleted(credential_id)


@router.post("/v1/vaults/{vault_id}/credentials/{credential_id}/mcp_oauth_validate")
async def validate(vault_id: str, credential_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    return await validate_credential(
        svc.store.vaults,
        caller.workspace_id,
        vault_id,
        credential_id,
        timeout_s=svc.settings.vault_probe_timeout_s,
    )
