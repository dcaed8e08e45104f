"""``HANGAR_DURABILITY`` reaches the engines: what each mode asks the database for.

(That an acknowledged write survives ``kill -9`` of the server in the default mode is
``test_durability.py``; this checks the settings behind both modes on both engines.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from hangar.config import to_async_url
from hangar.store.db import open_database
from tests.conftest import database_url_for


async def setting(db_url: str, durability: str, *, durable: bool) -> str:
    db = open_database(db_url, durability)
    try:
        query = "PRAGMA synchronous" if db.dialect == "sqlite" else "SHOW synchronous_commit"
        async with db.write(durable=durable) as conn:
            return str((await conn.execute(sa.text(query))).scalar())
    finally:
        await db.close()


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return to_async_url(database_url_for(backend, request) or f"sqlite:///{tmp_path / 'd.db'}")


async def test_process_mode_never_waits_for_the_disk(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = url_for(backend, request, tmp_path)
    relaxed = "1" if backend == "sqlite" else "off"  # SQLite NORMAL is 1
    assert await setting(url, "process", durable=True) == relaxed
    assert await setting(url, "process", durable=False) == relaxed


async def test_disk_mode_waits_for_the_disk_on_client_writes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = url_for(backend, request, tmp_path)
    if backend == "sqlite":
        assert await setting(url, "disk", durable=True) == "2"  # FULL
    else:
        assert await setting(url, "disk", durable=True) == "on"
        assert await setting(url, "disk", durable=False) == "off"  # the loop's own transitions


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        open_database("sqlite:///unused.db", "sometimes")
