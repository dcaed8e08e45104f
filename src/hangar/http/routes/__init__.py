"""One route module per SDK resource."""

from fastapi import APIRouter

from hangar.http.routes import (
    agents,
    environments,
    events,
    files,
    models,
    resources,
    sessions,
    threads,
    tunnels,
    vaults,
    work,
)

ROUTERS: list[APIRouter] = [
    agents.router,
    environments.router,
    sessions.router,
    events.router,
    threads.router,
    resources.router,
    files.router,
    models.router,
    work.router,
    vaults.router,
    tunnels.router,
]
