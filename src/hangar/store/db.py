"""The database handle: one base class, a small subclass per engine holding only what differs.

Concurrency model
- SQLite: WAL journal, ``synchronous=NORMAL`` (a committed transaction survives the process
  being killed; only an OS crash can lose the newest commits), a busy timeout, and a single
  writer: writes are serialised by an asyncio lock and open with ``BEGIN IMMEDIATE`` so they
  never fail half-way on a lock upgrade. Reads run concurrently on other pooled connections.
- PostgreSQL (psycopg 3): ordinary read-committed transactions; rows that must not race are
  claimed with ``FOR UPDATE`` (and ``SKIP LOCKED`` for queues).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def now_us() -> int:
    return time.time_ns() // 1000


class Database:
    """An async engine plus the transaction discipline of its dialect."""

    dialect: str = "generic"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    def for_update(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._writer = asyncio.Lock()

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take over transaction control from the driver so BEGIN IMMEDIATE can be issued.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("hangar_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer, self.engine.connect() as conn:
            conn = await conn.execution_options(hangar_write=True)
            async with conn.begin():
                yield conn


class PostgresDatabase(Database):
    dialect = "postgresql"

    def for_update(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt.with_for_update()


def open_database(url: str) -> Database:
    """Open the database at an async SQLAlchemy URL (see ``Settings.resolved_database_url``)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=8, max_overflow=8)
        return SqliteDatabase(engine)
    engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return PostgresDatabase(engine)
