"""Where the database's schema stands relative to this Hangar, and what to do about it.

``hangar serve`` and the key commands create the schema on an empty database, but refuse to run
on one that an older (or newer) Hangar left behind: upgrading is an explicit ``hangar migrate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hangar.config import Settings, to_sync_url
from hangar.store.migrate import MIGRATIONS_DIR, upgrade

log = logging.getLogger(__name__)

SchemaState = Literal["current", "empty", "behind", "unknown", "unversioned"]


@dataclass(frozen=True)
class SchemaStatus:
    """The database's Alembic revision compared with the newest one this Hangar ships."""

    state: SchemaState
    revision: str | None
    head: str

    def describe(self) -> str:
        match self.state:
            case "current":
                return f"schema at revision {self.head} (current)"
            case "empty":
                return "database is empty (no schema yet)"
            case "behind":
                return f"database schema is at revision {self.revision}, this Hangar needs {self.head}"
            case "unknown":
                return (
                    f"database schema revision {self.revision!r} is unknown to this Hangar "
                    f"(newest known: {self.head}); a newer Hangar probably wrote it"
                )
            case "unversioned":
                return "database has tables but no Hangar schema revision"

    def fix(self) -> str | None:
        match self.state:
            case "current":
                return None
            case "empty":
                return "`hangar serve` or `hangar migrate` creates the schema"
            case "behind":
                return "run `hangar migrate` (with the same --data-dir/--database-url) first"
            case "unknown":
                return "upgrade Hangar, or point --database-url at the right database"
            case "unversioned":
                return "point --data-dir/--database-url at an empty database or one Hangar created"


def display_url(url: str) -> str:
    """Where the database is, for messages: a SQLite file's path, or the URL with its password
    masked and without the driver name."""
    parsed = sa.make_url(url)
    path = sqlite_path(url)
    if path is not None:
        return f"SQLite {path}"
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other engines or in-memory databases)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def sync_engine(url: str, connect_timeout_s: int = 5) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if sa.make_url(url).get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = connect_timeout_s
    return sa.create_engine(to_sync_url(url), poolclass=sa.pool.NullPool, connect_args=connect_args)


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def schema_status(url: str) -> SchemaStatus:
    """Connect to ``url`` and compare its revision with the newest migration.

    A SQLite file that does not exist reads as empty and is not created. Raises
    ``sqlalchemy.exc.DBAPIError`` when the database cannot be reached.
    """
    scripts = _scripts()
    head = scripts.get_current_head()
    assert head is not None, "no migrations shipped"
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return SchemaStatus("empty", None, head)
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            tables = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    if revision == head:
        return SchemaStatus("current", revision, head)
    if revision is None:
        return SchemaStatus("unversioned" if tables else "empty", None, head)
    known = {rev.revision for rev in scripts.walk_revisions()}
    return SchemaStatus("behind" if revision in known else "unknown", revision, head)


class SchemaNotReady(RuntimeError):
    """The database cannot be used as it is; the message names the fix."""


def prepare_database(settings: Settings, *, migrate: bool = False) -> SchemaStatus:
    """Make the database usable by this Hangar, or explain why not.

    An empty database gets the schema; with ``migrate`` an older one is upgraded too. Anything
    else raises ``SchemaNotReady`` (or ``DBAPIError`` when the database is unreachable).
    """
    url = settings.resolved_database_url
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    status = schema_status(url)
    if status.state == "empty" or (status.state == "behind" and migrate):
        upgrade(url)
        after = schema_status(url)
        log.info(
            "database schema %s revision %s", "upgraded to" if status.revision else "created at", after.head
        )
        return after
    if status.state != "current":
        raise SchemaNotReady(f"{status.describe()}: {status.fix()}")
    return status
