"""Persistence of environments (placeholder: filled in by the environments work)."""

from __future__ import annotations

from hangar.store.db import Database


class EnvironmentStore:
    def __init__(self, db: Database) -> None:
        self.db = db
