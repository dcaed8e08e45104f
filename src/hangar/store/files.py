"""Persistence of files (placeholder: filled in by the files work)."""

from __future__ import annotations

from hangar.store.db import Database


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db
