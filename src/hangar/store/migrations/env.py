"""Alembic environment: Hangar runs migrations programmatically (``hangar.store.migrate``)."""

from __future__ import annotations

from alembic import context

from hangar.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when alembic is run by hand
    raise RuntimeError("run migrations with `hangar migrate`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
