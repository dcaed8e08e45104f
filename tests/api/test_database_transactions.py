"""Write transactions on both engines: all or nothing, whatever ``defer`` postpones.

On PostgreSQL a write transaction sends its deferred writes with its next statement or its
``COMMIT`` (``hangar.store.db._BatchedTx``); these tests pin down what that must not change:
a deferred write is visible to the transaction's own later reads, its failure rolls back the
whole transaction, a cancelled transaction commits nothing, and the connection is fit for
reuse afterwards.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from hangar.config import to_async_url
from hangar.store.db import Database, open_database
from hangar.store.prepared import Prepared
from tests.conftest import database_url_for

metadata = sa.MetaData()
items = sa.Table(
    "tx_items",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("data", sa.JSON),
)
INSERT = Prepared(
    items.insert().values(
        id=sa.bindparam("id"), n=sa.bindparam("n"), data=sa.bindparam("data", type_=sa.JSON)
    )
)
# Checked at COMMIT: the way to make a COMMIT itself fail.
links = sa.Table(
    "tx_links",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("item_id", sa.String, nullable=False),
    sa.ForeignKeyConstraint(["item_id"], ["tx_items.id"], deferrable=True, initially="DEFERRED"),
)
LINK = Prepared(links.insert().values(id=sa.bindparam("id"), item_id=sa.bindparam("item_id")))
COUNT = Prepared(sa.select(sa.func.count()).select_from(items))
GET = Prepared(sa.select(items.c.n, items.c.data).where(items.c.id == sa.bindparam("id")))


@pytest.fixture
async def db(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = to_async_url(database_url_for(backend, request) or f"sqlite:///{tmp_path / 'd.db'}")
    database = open_database(url)
    async with database.write() as conn:
        await conn.execute(sa.schema.CreateTable(items))
        await conn.execute(sa.schema.CreateTable(links))
    try:
        yield database
    finally:
        await database.close()


async def count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.run(COUNT)).scalar())


async def test_deferred_writes_commit_and_are_read_back_inside(db: Database) -> None:
    odd = {"quote": "it's 100% \\ fine", "nested": [1, None, "ünï"]}
    async with db.write(durable=False) as conn:
        await conn.defer(INSERT, {"id": "a", "n": 1, "data": odd})
        await conn.defer(INSERT, {"id": "b", "n": 2, "data": None})
        row = (await conn.run(GET, {"id": "a"})).first()  # sees its own deferred write
        assert row is not None and row[0] == 1 and row[1] == odd
        await conn.defer(INSERT, {"id": "c", "n": 3, "data": {}})
        # A statement that is not `Prepared` sees them too.
        assert (await conn.scalar(sa.select(sa.func.sum(items.c.n)))) == 6
    assert await count(db) == 3
    async with db.read() as conn:
        row = (await conn.run(GET, {"id": "a"})).first()
    assert row is not None and row[1] == odd


def insert_many(n: int) -> Prepared:
    return Prepared(
        items.insert().values(
            [
                {
                    "id": sa.bindparam(f"id_{i}"),
                    "n": sa.bindparam(f"n_{i}"),
                    "data": sa.bindparam(f"data_{i}", type_=sa.JSON),
                }
                for i in range(n)
            ]
        )
    )


async def test_a_deferred_statement_with_many_parameters_keeps_every_value(db: Database) -> None:
    # Over 50 parameters, _BatchedTx binds the values itself (psycopg would re-parse the SQL).
    odd = ["it's 100% \\ fine", "%(id_0)s", "ünï ✓", "", "a'';--", None, -7, 2**62, 0.5]
    rows = {f"r{i}": (i - 40, {"v": odd[i % len(odd)], "i": i}) for i in range(40)}
    params: dict[str, object] = {}
    for i, (key, (n, data)) in enumerate(rows.items()):
        params |= {f"id_{i}": key, f"n_{i}": n, f"data_{i}": data}
    async with db.write(durable=False) as conn:
        await conn.defer(insert_many(len(rows)), params)
        await conn.defer(INSERT, {"id": "100%", "n": 1, "data": None})
    assert await count(db) == len(rows) + 1
    async with db.read() as conn:
        for key, (n, data) in rows.items():
            row = (await conn.run(GET, {"id": key})).first()
            assert row is not None and (row[0], row[1]) == (n, data)
        row = (await conn.run(GET, {"id": "100%"})).first()
        assert row is not None and row[0] == 1


BUMP = Prepared(
    items.update().where(items.c.id == sa.bindparam("_id")).values(n=items.c.n + 1).returning(items.c.n)
)


async def test_a_deferred_statement_hands_its_result_over_once_sent(db: Database) -> None:
    # The journal reads its session row's new version this way (RETURNING, sent with COMMIT).
    async with db.write() as conn:
        await conn.defer(INSERT, {"id": "r", "n": 41, "data": None})
        first = await conn.defer(BUMP, {"_id": "r"})
        second = await conn.defer(BUMP, {"_id": "r"})
    assert first.result is not None and second.result is not None
    assert [tuple(r) for r in first.result.all()] == [(42,)]
    assert [tuple(r) for r in second.result.all()] == [(43,)]


async def test_a_failing_deferred_write_rolls_back_the_whole_transaction(db: Database) -> None:
    async with db.write() as conn:
        await conn.defer(INSERT, {"id": "a", "n": 1, "data": None})
    with pytest.raises(Exception) as raised:
        async with db.write() as conn:
            await conn.defer(INSERT, {"id": "b", "n": 2, "data": None})
            await conn.defer(INSERT, {"id": "a", "n": 3, "data": None})  # duplicate key
    assert "unique" in str(raised.value).lower() or "duplicate" in str(raised.value).lower()
    assert await count(db) == 1  # `b` went with it
    for i in range(12):  # more than any pool holds: every connection is still usable
        async with db.write() as conn:
            await conn.defer(INSERT, {"id": f"c{i}", "n": i, "data": None})
    assert await count(db) == 13


async def test_an_error_raised_by_the_caller_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.defer(INSERT, {"id": "a", "n": 1, "data": None})
            assert (await conn.run(COUNT)).scalar() == 1
            raise RuntimeError("changed my mind")
    assert await count(db) == 0


async def test_a_cancelled_transaction_commits_nothing(db: Database) -> None:
    entered = asyncio.Event()

    async def slow() -> None:
        async with db.write() as conn:
            await conn.defer(INSERT, {"id": "a", "n": 1, "data": None})
            # Open on the server now, and through SQLAlchemy too (whose end-of-use bookkeeping
            # must not turn into a COMMIT of this half-done work).
            await conn.scalar(sa.select(sa.func.count()).select_from(items))
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(slow())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count(db) == 0
    async with db.write() as conn:  # the pool recovers; the row lock is gone
        await conn.defer(INSERT, {"id": "a", "n": 2, "data": None})
    assert await count(db) == 1


async def test_a_failed_commit_leaves_nothing_behind_for_the_next_transaction(db: Database) -> None:
    # The driver's own error (hot statements and COMMIT go to the driver directly).
    with pytest.raises(
        (sqlite3.IntegrityError, psycopg.errors.ForeignKeyViolation), match=r"(?i)foreign key"
    ):
        async with db.write() as conn:
            await conn.defer(INSERT, {"id": "a", "n": 1, "data": None})
            await conn.defer(LINK, {"id": "l1", "item_id": "missing"})  # fails at COMMIT
    assert await count(db) == 0
    # The next transaction on the (reused) connection starts afresh: the failed one's rows are
    # neither committed with it nor in its way.
    async with db.write() as conn:
        await conn.defer(INSERT, {"id": "a", "n": 2, "data": None})
        await conn.defer(LINK, {"id": "l1", "item_id": "a"})
    assert await count(db) == 1
    async with db.read() as conn:
        row = (await conn.run(GET, {"id": "a"})).first()
    assert row is not None and row[0] == 2
