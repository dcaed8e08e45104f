"""Migrations are the schema: a database migrated to head equals ``store/schema.py``, on every
backend, and ``hangar serve`` refuses a database whose schema is not current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hangar.config import to_async_url, to_sync_url
from hangar.store.migrate import MIGRATIONS_DIR, head_revision, upgrade
from hangar.store.schema import metadata
from hangar.testing import free_port
from tests.conftest import database_url_for

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "ANTHROPIC_"))}


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on the backend under test (async URL)."""
    url = database_url_for(backend, request) or f"sqlite:///{tmp_path / 'hangar.db'}"
    return to_async_url(url)


def sync_engine(url: str) -> sa.Engine:
    return sa.create_engine(to_sync_url(url), poolclass=sa.pool.NullPool)


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def schema_diff(url: str) -> list[object]:
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def set_revision(url: str, revision: str) -> None:
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """What an older Hangar would have left: the schema as of ``revision``."""
    cfg = config()
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def serve(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``hangar serve`` on ``url``; it is expected to exit by itself (refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "hangar", "serve", "--port", str(free_port()), "--database-url", url, *extra],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrated_database_equals_schema_metadata(database_url: str) -> None:
    upgrade(database_url)
    assert schema_diff(database_url) == []


def test_every_table_is_created_by_migrations(database_url: str) -> None:
    upgrade(database_url)
    engine = sync_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_migrations_form_one_numbered_line() -> None:
    """One head, numbered files, and every revision id is the file's number."""
    revisions = list(scripts().walk_revisions())
    assert len(scripts().get_heads()) == 1
    files = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert len(files) == len(revisions)
    for rev in revisions:
        assert rev.path is not None
        assert Path(rev.path).name.startswith(rev.revision + "_"), rev.path


def test_serve_refuses_a_database_left_behind(database_url: str) -> None:
    head = head_revision()
    previous = scripts().get_revision(head).down_revision
    if previous is None:
        pytest.skip("only one migration exists: no older schema to refuse yet")
    assert isinstance(previous, str)
    upgrade(database_url)
    downgrade(database_url, previous)

    done = serve(database_url)
    assert done.returncode == 1
    assert f"database schema is at revision {previous}, this Hangar needs {head}" in done.stderr
    assert "run `hangar migrate`" in done.stderr

    migrated = subprocess.run(
        [sys.executable, "-m", "hangar", "migrate", "--database-url", database_url],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"database at revision {head} (was {previous})" in migrated.stdout
    assert schema_diff(database_url) == []


def test_serve_refuses_a_schema_it_does_not_know(database_url: str) -> None:
    """A revision this Hangar has never seen (a newer Hangar's) is refused, and not touched."""
    upgrade(database_url)
    set_revision(database_url, "9999")
    for extra in ((), ("--migrate",)):
        done = serve(database_url, *extra)
        assert done.returncode == 1, done.stderr
        assert "refusing to start: database schema revision '9999' is unknown to this Hangar" in done.stderr
        assert "Traceback" not in done.stderr
    engine = sync_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "9999"
    finally:
        engine.dispose()


def test_serve_refuses_tables_without_a_revision(database_url: str) -> None:
    upgrade(database_url)
    engine = sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM alembic_version"))
    finally:
        engine.dispose()
    done = serve(database_url)
    assert done.returncode == 1
    assert "database has tables but no Hangar schema revision" in done.stderr
