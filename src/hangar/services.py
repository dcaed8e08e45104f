"""The object graph a running server owns, built once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.config import Settings
from hangar.runtime.journal import Journal
from hangar.runtime.models.router import ModelRouter
from hangar.runtime.scheduler import Scheduler
from hangar.runtime.tools.executor import ExecutorPool
from hangar.store import Store
from hangar.store.bus import EventBus


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    journal: Journal
    models: ModelRouter
    scheduler: Scheduler
    executors: ExecutorPool
    sandbox_error: str | None = None
    """Why cloud sessions cannot run here (no bubblewrap, …), or None."""
