"""Live checks of ``mcp_oauth`` credentials: the MCP ``initialize`` probe, the refresh-token
exchange (client authentication ``none`` / ``client_secret_basic`` / ``client_secret_post``) and
the ``mcp_oauth_validate`` report that combines them (API §1.8, BEHAVIOUR §12).

Refreshed tokens are stored back, sealed. Captured response bodies are scrubbed of every secret
the exchange involved (and of token-like JSON fields) before they are reported; nothing here logs
a secret. The runtime reuses :func:`refresh_oauth` / :func:`refresh_and_store`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx

from hangar.errors import InvalidRequest, NotFound
from hangar.store.db import now_us
from hangar.store.vaults import VaultStore
from hangar.wire.vaults import validation_object

__all__ = [
    "HttpCapture",
    "ProbeResult",
    "RefreshOutcome",
    "probe_mcp",
    "refresh_and_store",
    "refresh_oauth",
    "validate_credential",
]

BODY_LIMIT = 4096
"""Characters of a captured response body kept in a validation report."""
MCP_PROTOCOL_VERSION = "2025-06-18"
REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(r"token|secret|password|assertion", re.IGNORECASE)


@dataclass(frozen=True)
class HttpCapture:
    status_code: int
    content_type: str
    body: str
    body_truncated: bool

    def wire(self) -> dict[str, Any]:
        return {
            "status_code": self.status_code,
            "content_type": self.content_type,
            "body": self.body,
            "body_truncated": self.body_truncated,
        }


def _scrub_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SENSITIVE_KEY.search(k) and isinstance(v, str) else _scrub_json(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_json(v) for v in value]
    return value


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` without any of ``secrets`` and, when it is JSON, without token-like fields."""
    with contextlib.suppress(json.JSONDecodeError, RecursionError):
        text = json.dumps(_scrub_json(json.loads(text)), ensure_ascii=False)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


async def _capture(response: httpx.Response, secrets: list[str]) -> HttpCapture:
    raw = b""
    truncated = False
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > BODY_LIMIT * 4:
            truncated = True
            break
    text = scrub(raw.decode("utf-8", errors="replace"), secrets)
    if len(text) > BODY_LIMIT:
        text, truncated = text[:BODY_LIMIT], True
    return HttpCapture(response.status_code, response.headers.get("content-type", ""), text, truncated)


# -- the MCP probe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    outcome: Literal["ok", "unauthorized", "error", "connect_error"]
    http_response: HttpCapture | None


def initialize_request() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "hangar-credential-probe", "version": "1"},
        },
    }


async def probe_mcp(http: httpx.AsyncClient, url: str, access_token: str) -> ProbeResult:
    """POST an MCP ``initialize`` to ``url`` with the bearer token: did the server accept it?"""
    headers = {
        "authorization": f"Bearer {access_token}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    try:
        async with http.stream("POST", url, json=initialize_request(), headers=headers) as response:
            if response.is_success:
                session = response.headers.get("mcp-session-id")
                outcome: ProbeResult = ProbeResult("ok", None)
            else:
                session = None
                kind: Literal["unauthorized", "error"] = (
                    "unauthorized" if response.status_code in (401, 403) else "error"
                )
                outcome = ProbeResult(kind, await _capture(response, [access_token]))
    except (httpx.HTTPError, httpx.InvalidURL):
        return ProbeResult("connect_error", None)
    if session:  # end the session the probe opened (best effort)
        with contextlib.suppress(httpx.HTTPError, httpx.InvalidURL):
            await http.delete(
                url, headers={"authorization": headers["authorization"], "mcp-session-id": session}
            )
    return outcome


# -- the refresh -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshOutcome:
    status: Literal["succeeded", "failed", "connect_error", "no_refresh_token"]
    http_response: HttpCapture | None = None
    access_token: str | None = None
    expires_at_us: int | None = None
    refresh_token: str | None = None
    """A rotated refresh token, when the endpoint issued one."""

    def wire(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "http_response": self.http_response.wire() if self.http_response else None,
        }


async def refresh_oauth(http: httpx.AsyncClient, auth: dict[str, Any]) -> RefreshOutcome:
    """Exchange the refresh token of ``auth`` (a decrypted ``mcp_oauth`` auth, see
    ``VaultStore.credential_secret``) at its token endpoint. Stores nothing."""
    refresh = auth.get("refresh")
    if not refresh or not refresh.get("refresh_token"):
        return RefreshOutcome("no_refresh_token")
    endpoint_auth = refresh["token_endpoint_auth"]
    client_secret = endpoint_auth.get("client_secret") or ""
    form = {"grant_type": "refresh_token", "refresh_token": refresh["refresh_token"]}
    if refresh.get("scope"):
        form["scope"] = refresh["scope"]
    if refresh.get("resource"):
        form["resource"] = refresh["resource"]
    headers = {"accept": "application/json"}
    if endpoint_auth["type"] == "client_secret_basic":
        pair = f"{quote_plus(refresh['client_id'])}:{quote_plus(client_secret)}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = refresh["client_id"]
        if endpoint_auth["type"] == "client_secret_post":
            form["client_secret"] = client_secret
    known = [auth.get("access_token") or "", refresh["refresh_token"], client_secret]
    try:
        async with http.stream("POST", refresh["token_endpoint"], data=form, headers=headers) as response:
            if not response.is_success:
                return RefreshOutcome("failed", await _capture(response, known))
            raw = await response.aread()
    except (httpx.HTTPError, httpx.InvalidURL):
        return RefreshOutcome("connect_error")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        text = scrub(raw.decode("utf-8", errors="replace"), known)
        capture = HttpCapture(
            response.status_code,
            response.headers.get("content-type", ""),
            text[:BODY_LIMIT],
            len(text) > BODY_LIMIT,
        )
        return RefreshOutcome("failed", capture)
    assert isinstance(body, dict)
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = time.time_ns() // 1000 + int(expires_in * 1_000_000)
    rotated = body.get("refresh_token")
    return RefreshOutcome(
        "succeeded",
        access_token=token,
        expires_at_us=expires_at,
        refresh_token=rotated if isinstance(rotated, str) and rotated else None,
    )


async def refresh_and_store(
    store: VaultStore, http: httpx.AsyncClient, workspace_id: str, credential_id: str, auth: dict[str, Any]
) -> RefreshOutcome:
    """:func:`refresh_oauth`, then store the new tokens (sealed) when it succeeded."""
    outcome = await refresh_oauth(http, auth)
    if outcome.status == "succeeded":
        assert outcome.access_token is not None
        await store.store_oauth_tokens(
            workspace_id,
            credential_id,
            access_token=outcome.access_token,
            expires_at_us=outcome.expires_at_us,
            refresh_token=outcome.refresh_token,
        )
    return outcome


# -- mcp_oauth_validate ----------------------------------------------------------------------------


def _probe_wire(probe: ProbeResult) -> dict[str, Any]:
    return {
        "method": "initialize",
        "http_response": probe.http_response.wire() if probe.http_response else None,
    }


async def validate_credential(
    store: VaultStore, workspace_id: str, vault_id: str, credential_id: str, *, timeout_s: float
) -> dict[str, Any]:
    """The ``vault_credential_validation`` report of a live probe of an ``mcp_oauth`` credential."""
    found = await store.get_credential(workspace_id, vault_id, credential_id)
    if found is None:
        raise NotFound(f"Credential {credential_id} not found.")
    if found["archived_at"] is not None:
        raise InvalidRequest("Credential is archived.")
    if found["auth"]["type"] != "mcp_oauth":
        raise InvalidRequest("The request was invalid")
    auth = await store.credential_secret(workspace_id, credential_id)
    refresh_cfg = auth.get("refresh") or {}
    has_refresh = bool(refresh_cfg.get("refresh_token"))
    url = auth["mcp_server_url"]

    def report(status: str, probe: ProbeResult | None, refresh: RefreshOutcome | None) -> dict[str, Any]:
        return validation_object(
            credential_id,
            vault_id,
            status=status,
            has_refresh_token=has_refresh,
            validated_at=now_us(),
            mcp_probe=_probe_wire(probe) if probe is not None else None,
            refresh=refresh.wire() if refresh is not None else None,
        )

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False) as http:
        probe = await probe_mcp(http, url, auth["access_token"])
        if probe.outcome == "ok":
            return report("valid", None, None)
        if probe.outcome != "unauthorized":
            return report("unknown", probe, None)
        refreshed = await refresh_and_store(store, http, workspace_id, credential_id, auth)
        if refreshed.status == "no_refresh_token":
            return report("invalid", probe, refreshed)
        if refreshed.status != "succeeded":
            return report("unknown", probe, refreshed)
        assert refreshed.access_token is not None
        again = await probe_mcp(http, url, refreshed.access_token)
        if again.outcome == "ok":
            return report("valid", None, refreshed)
        return report("invalid" if again.outcome == "unauthorized" else "unknown", again, refreshed)
