"""MCP toolsets in the agent loop: the glue between sessions, vaults and :mod:`hangar.runtime.mcp`.

One :class:`McpTools` per server process (built by ``create_app``, closed at shutdown) owns the
:class:`~hangar.runtime.mcp.McpSessionPool` and does, for the loop:

- :meth:`McpTools.tools`: before each model request, the tools of the agent's MCP servers (listed
  once per connection) as Messages-API definitions under their model-facing names. A server that
  cannot be reached, or refuses the credentials, is left out for the rest of the turn and
  reported once (the returned errors become ``session.error`` events); the next turn tries again.
- :meth:`McpTools.call`: one ``agent.mcp_tool_use`` call. The result is what the server said
  (``is_error`` when the tool failed); a connection lost mid-call is an ``is_error`` result plus
  the error to report. Results over ``mcp_max_result_bytes`` are spilled to a file in the
  session's workspace (:func:`~hangar.runtime.mcp.spill_large_result`), named as the sandbox
  sees it.
- Credentials: the session's vaults (``vault_ids``) give the credential whose ``mcp_server_url``
  equals the server's URL exactly. ``static_bearer`` → ``Authorization: Bearer <token>``;
  ``mcp_oauth`` → the access token, refreshed (and stored back, sealed) when it expires within
  :data:`REFRESH_MARGIN_S`, and once more when the server answers 401. The header is set on the
  outgoing MCP request only; the token is never in an event, a log line or a model request.
- :meth:`McpTools.close_session`: drop a session's connections (archive, delete, eviction of its
  executor), unless an MCP call of the session is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from hangar.config import Settings
from hangar.domain.vaults import refresh_and_store
from hangar.errors import NotFound
from hangar.runtime.calls import Call, tool_definitions
from hangar.runtime.mcp import (
    McpCallResult,
    McpConnection,
    McpError,
    McpSessionPool,
    McpTool,
    McpToolMap,
    find_mcp_toolset,
    mcp_tool_definitions,
    spill_large_result,
)
from hangar.runtime.mcp.results import error_result
from hangar.runtime.tools.executor import WorkspaceExecutor
from hangar.store import Store
from hangar.store.events import NewEvent
from hangar.store.sessions import SessionRecord
from hangar.wire import events as ev

log = logging.getLogger(__name__)

MCP_CREDENTIAL_TYPES = ("static_bearer", "mcp_oauth")
REFRESH_MARGIN_S = 60.0
"""An OAuth access token that expires within this many seconds is refreshed before use."""
SECRET_TTL_S = 30.0
"""How long a decrypted credential is reused before it is read from the store again."""
CALL_TIMEOUT_S = 600.0
"""The longest an MCP tool call may take; then it is an ``is_error`` result."""
SPILL_DIR = ".mcp_results"


@dataclass
class _Turn:
    """What one turn of a session learnt about its MCP servers."""

    turn: int
    failed: set[str] = field(default_factory=set)
    """Servers that failed this turn: left out, reported once."""
    credentials: dict[str, str | None] = field(default_factory=dict)
    """Server URL → the id of the credential that authenticates to it (None: none)."""


@dataclass
class _Secret:
    auth: dict[str, Any]
    loaded_at: float
    sent: str | None = None
    """The last token set on a request (to tell a stale token from a revoked one on a 401)."""
    refresh_failed_at: float | None = None

    def may_refresh(self) -> bool:
        """An expiring token is refreshed, but not again right after a failed refresh."""
        failed = self.refresh_failed_at
        return _refreshable(self.auth) and (failed is None or time.monotonic() - failed > SECRET_TTL_S)


class McpTools:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        pool: McpSessionPool | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool or McpSessionPool()
        self.call_timeout_s = call_timeout_s
        self._turns: dict[str, _Turn] = {}
        self._secrets: dict[str, _Secret] = {}
        self._secret_locks: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, int] = {}
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ the loop's side

    async def tools(self, session: SessionRecord) -> tuple[McpToolMap, list[McpError]]:
        """The MCP tools to offer in the session's next model request, and the failures not
        reported yet this turn (one per server and turn)."""
        agent = session.data["agent"]
        tools = agent.get("tools")
        servers = [s for s in agent.get("mcp_servers") or () if find_mcp_toolset(tools, s["name"])]
        if not servers:
            return McpToolMap(), []
        turn = self._turn(session)
        wanted = [s for s in servers if s["name"] not in turn.failed]
        outcomes = await asyncio.gather(*(self._list(session, s) for s in wanted))
        listed: dict[str, list[McpTool]] = {}
        errors: list[McpError] = []
        for server, outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, McpError):
                turn.failed.add(server["name"])
                errors.append(outcome)
            else:
                listed[server["name"]] = outcome
        reserved = [t["name"] for t in tool_definitions(agent)]
        return mcp_tool_definitions(agent.get("tools"), servers, listed, reserved=reserved), errors

    async def call(
        self, session: SessionRecord, call: Call, executor: WorkspaceExecutor
    ) -> tuple[McpCallResult, McpError | None]:
        """Run an MCP call: its result for the model, and a failure to report (or None)."""
        servers = session.data["agent"].get("mcp_servers") or ()
        server = next((s for s in servers if s["name"] == call.server), None)
        if server is None:
            return error_result(f"{call.name}: the MCP server {call.server!r} is not configured"), None
        self._busy[session.id] = self._busy.get(session.id, 0) + 1
        try:
            conn = await self._connection(session, server)
            result = await conn.call(call.name, call.input, timeout_s=self.call_timeout_s)
        except McpError as exc:
            turn = self._turn(session)
            report = None if exc.server_name in turn.failed else exc
            turn.failed.add(exc.server_name)
            return error_result(exc.message), report
        finally:
            self._busy[session.id] -= 1
            if not self._busy[session.id]:
                del self._busy[session.id]
        return await self._spill(result, call, executor), None

    def busy(self, session_id: str) -> bool:
        return session_id in self._busy

    async def close_session(self, session_id: str) -> None:
        """Disconnect the session's MCP servers (not while one of its calls runs)."""
        if self.busy(session_id):
            return
        self._turns.pop(session_id, None)
        await self.pool.close_session(session_id)

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------------ connections

    def _turn(self, session: SessionRecord) -> _Turn:
        number = int(session.data.get("turns", 0))
        turn = self._turns.get(session.id)
        if turn is None or turn.turn != number:
            turn = self._turns[session.id] = _Turn(number)
        return turn

    async def _list(self, session: SessionRecord, server: Mapping[str, Any]) -> list[McpTool] | McpError:
        try:
            conn = await self._connection(session, server)
            return await conn.list_tools()
        except McpError as exc:
            log.warning(
                "mcp server unavailable",
                extra={"session_id": session.id, "mcp_server": exc.server_name, "error": exc.error_type},
            )
            return exc

    async def _connection(self, session: SessionRecord, server: Mapping[str, Any]) -> McpConnection:
        url = str(server["url"])
        turn = self._turn(session)
        if url not in turn.credentials:
            turn.credentials[url] = await self._credential_for(session, url)
        credential_id = turn.credentials[url]
        if credential_id is None:
            return await self.pool.get(session.id, server, workspace_id=session.workspace_id)
        workspace_id = session.workspace_id

        async def headers() -> dict[str, str]:
            return await self._headers(workspace_id, credential_id)

        async def unauthorized() -> None:
            await self._on_unauthorized(workspace_id, credential_id)

        return await self.pool.get(
            session.id,
            server,
            headers_factory=headers,
            on_unauthorized=unauthorized,
            workspace_id=workspace_id,
        )

    # ------------------------------------------------------------------ credentials

    async def _credential_for(self, session: SessionRecord, url: str) -> str | None:
        vault_ids = list(session.data.get("vault_ids") or ())
        if not vault_ids:
            return None
        refs = await self.store.vaults.credentials_for_vaults(session.workspace_id, vault_ids)
        return next(
            (r.id for r in refs if r.type in MCP_CREDENTIAL_TYPES and r.mcp_server_url == url),
            None,
        )

    def _lock(self, credential_id: str) -> asyncio.Lock:
        return self._secret_locks.setdefault(credential_id, asyncio.Lock())

    async def _load(self, workspace_id: str, credential_id: str) -> _Secret | None:
        try:
            auth = await self.store.vaults.credential_secret(workspace_id, credential_id)
        except NotFound:  # archived or deleted meanwhile: no credential any more
            self._secrets.pop(credential_id, None)
            return None
        secret = _Secret(auth, time.monotonic())
        self._secrets[credential_id] = secret
        return secret

    async def _headers(self, workspace_id: str, credential_id: str) -> dict[str, str]:
        secret = self._secrets.get(credential_id)
        if secret is None or time.monotonic() - secret.loaded_at > SECRET_TTL_S or _expiring(secret.auth):
            async with self._lock(credential_id):
                secret = self._secrets.get(credential_id)
                if secret is None or time.monotonic() - secret.loaded_at > SECRET_TTL_S:
                    secret = await self._load(workspace_id, credential_id)
                if secret is not None and _expiring(secret.auth) and secret.may_refresh():
                    secret = await self._refresh(workspace_id, credential_id, secret) or secret
        if secret is None:
            return {}
        token = _token(secret.auth)
        secret.sent = token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _on_unauthorized(self, workspace_id: str, credential_id: str) -> None:
        """The server refused the token: take a newer one from the store if the credential was
        updated meanwhile, else refresh an OAuth token once."""
        async with self._lock(credential_id):
            sent = self._secrets[credential_id].sent if credential_id in self._secrets else None
            secret = await self._load(workspace_id, credential_id)
            if secret is None or _token(secret.auth) != sent:
                return
            if _refreshable(secret.auth):
                await self._refresh(workspace_id, credential_id, secret)

    async def _refresh(self, workspace_id: str, credential_id: str, secret: _Secret) -> _Secret | None:
        """Exchange the refresh token; the new tokens are stored back (sealed) and used."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.vault_probe_timeout_s)
        outcome = await refresh_and_store(
            self.store.vaults, self._http, workspace_id, credential_id, secret.auth
        )
        if outcome.status != "succeeded":
            secret.refresh_failed_at = time.monotonic()
            log.warning(
                "mcp oauth refresh failed",
                extra={"credential_id": credential_id, "status": outcome.status},
            )
            return None
        log.info("mcp oauth token refreshed", extra={"credential_id": credential_id})
        return await self._load(workspace_id, credential_id)

    # ------------------------------------------------------------------ results

    async def _spill(self, result: McpCallResult, call: Call, executor: WorkspaceExecutor) -> McpCallResult:
        directory = executor.workdir / SPILL_DIR
        shown = getattr(executor, "sandbox_text", None)
        spilled = await spill_large_result(
            result,
            tool=call.name,
            server=call.server,
            directory=directory,
            limit=self.settings.mcp_max_result_bytes,
            shown_as=shown(str(directory)) if callable(shown) else None,
        )
        if spilled is not result:
            adopt = getattr(executor, "adopt", None)
            if callable(adopt):  # the sandbox's uid may read and remove it
                await adopt(Path(directory))
        return spilled


def _token(auth: Mapping[str, Any]) -> str | None:
    token = auth.get("token") if auth.get("type") == "static_bearer" else auth.get("access_token")
    return str(token) if token else None


def _refreshable(auth: Mapping[str, Any]) -> bool:
    refresh = auth.get("refresh") or {}
    return auth.get("type") == "mcp_oauth" and bool(refresh.get("refresh_token"))


def _expiring(auth: Mapping[str, Any]) -> bool:
    expires_at = auth.get("expires_at")
    if auth.get("type") != "mcp_oauth" or not expires_at:
        return False
    try:
        when = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return when - time.time() <= REFRESH_MARGIN_S


def error_events(errors: list[McpError], thread_id: str) -> list[NewEvent]:
    """``session.error`` events (``mcp_connection_failed_error`` /
    ``mcp_authentication_failed_error``) for MCP failures; the turn goes on without the server."""
    return [NewEvent(ev.SESSION_ERROR, {"error": e.session_error()}, thread_id=thread_id) for e in errors]
