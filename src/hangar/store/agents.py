"""Persistence of agents (placeholder: filled in by the agents work)."""

from __future__ import annotations

from hangar.store.db import Database


class AgentStore:
    def __init__(self, db: Database) -> None:
        self.db = db
