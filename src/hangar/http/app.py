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
from hangar.runtime.models.router import ModelRouter
from hangar.runtime.scheduler import Scheduler
from hangar.runtime.tools.executor import ExecutorPool
from hangar.services import Services
from hangar.store import Store, open_database
from hangar.store.bus import EventBus
from hangar.store.migrate import current_revision, head_revision

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


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_schema(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = SecretBox.from_settings(settings)  # refuses a malformed key or a loose key file
        db = open_database(settings.resolved_database_url)
        store = Store.open(db, secrets)
        await store.keys.ensure_workspace()
        if settings.api_key is not None and settings.api_key.get_secret_value().strip():
            await store.keys.register(settings.api_key.get_secret_value().strip())
        bus = EventBus()
        journal = Journal(store, bus)
        models = ModelRouter(settings)
        executors = ExecutorPool(settings)
        scheduler = Scheduler(store, Loop(store, bus, journal, models, settings, executors), executors)
        app.state.services = Services(settings, store, bus, journal, models, scheduler, executors)
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()
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
