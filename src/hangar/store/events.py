"""Persistence of events (placeholder: filled in by the events work)."""

from __future__ import annotations

from hangar.store.db import Database


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
