"""Persistence of sessions (placeholder: filled in by the sessions work)."""

from __future__ import annotations

from hangar.store.db import Database


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
