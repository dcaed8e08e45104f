"""``create_app(settings)``: explicit wiring of the whole server; the lifespan owns resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hangar.config import Settings
from hangar.crypto import SecretBox
from hangar.http import errors
from hangar.http.middleware import RequestContext
from hangar.http.routes import ROUTERS
from hangar.runtime.journal import Journal
from hangar.runtime.loop import Loop
from hangar.runtime.mcp import McpSessionPool
from hangar.runtime.mcp_tools import McpTools
from hangar.runtime.models.router import ModelRouter
from hangar.runtime.scheduler import Scheduler
from hangar.runtime.tools.executor import ExecutorFactory, ExecutorPool, WorkspaceExecutor
from hangar.sandbox import BwrapExecutor, sandbox_problems
from hangar.services import Services
from hangar.store import Store, open_database
from hangar.store.bus import EventBus
from hangar.store.migrate import current_revision, head_revision
from hangar.tunnel.hub import TunnelHub

log = logging.getLogger(__name__)


class StaleSchemaError(RuntimeError):
    pass


def check_schema(settings: Settings) -> None:
    """Refuse to start on a database whose schema is not the newest, naming the fix."""
    current, head = current_revision(settings.resolved_database_url), head_revision()
    if current != head:
        raise StaleSchemaError(
            f"database schema is at revision {current or 'none'}, this Hangar needs {head}: "
            "run `hangar migrate` (with the same --data-dir/--database-url) first"
        )


def executor_factory(settings: Settings) -> tuple[ExecutorFactory, str | None]:
    """Where cloud sessions' tools run: a bubblewrap sandbox per session, or (only when asked for
    with ``--unsafe-no-sandbox``) the bare workspace directory. The second value says why cloud
    sessions are refused, when they are."""
    if settings.unsafe_no_sandbox:
        log.warning(
            "RUNNING WITHOUT A SANDBOX (--unsafe-no-sandbox): agents' tools run as this server's "
            "user with its full access to this machine and network"
        )
        return WorkspaceExecutor, None
    problems = sandbox_problems()
    if problems:
        log.error("cloud sessions are disabled: %s", "; ".join(problems))
        return WorkspaceExecutor, "; ".join(problems)
    return BwrapExecutor, None


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_schema(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = SecretBox.from_settings(settings)  # refuses a malformed key or a loose key file
        db = open_database(settings.resolved_database_url, settings.durability)
        store = Store.open(db, secrets)
        await store.keys.ensure_workspace()
        tunnels = TunnelHub(
            store.tunnels,
            parent_domain=settings.tunnel_domain,
            response_timeout_s=settings.tunnel_response_timeout_s,
        )
        app.state.tunnels = tunnels
        if settings.api_key is not None and settings.api_key.get_secret_value().strip():
            await store.keys.register(settings.api_key.get_secret_value().strip())
        bus = EventBus()
        journal = Journal(store, bus)
        models = ModelRouter(settings)
        factory, sandbox_error = executor_factory(settings)
        mcp = McpTools(store, settings, pool=McpSessionPool(transport_resolver=tunnels.transport_for))
        executors = ExecutorPool(
            settings, factory, max_live=settings.max_live_executors, on_close=mcp.close_session
        )
        loop = Loop(store, bus, journal, models, settings, executors, mcp)
        scheduler = Scheduler(store, loop, executors)
        app.state.services = Services(
            settings, store, bus, journal, models, scheduler, executors, sandbox_error=sandbox_error
        )
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()
            await mcp.aclose()
            await tunnels.aclose()
            await models.aclose()
            await db.close()

    app = FastAPI(
        title="Hangar",
        summary="A self-hosted Managed Agents API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
