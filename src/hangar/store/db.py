"""The database handle: one base class, a small subclass per engine holding only what differs.

Repositories talk to a ``Conn``: ``await conn.execute(stmt)`` returns a fully buffered result
(``.all()``, ``.first()``, ``.scalar()``, ``.rowcount``), ``await conn.scalar(stmt)``.

Concurrency model
- SQLite: WAL journal, ``synchronous=NORMAL`` (a committed transaction survives the process
  being killed; only an OS crash can lose the newest commits), a busy timeout, and a single
  writer: one connection owns all writes, serialised by an asyncio lock, opened with
  ``BEGIN IMMEDIATE`` so they never fail half-way on a lock upgrade; inline reads reuse a few
  held connections. Statements run *inline* on the event loop by default: a local SQLite
  statement takes tens of microseconds, less than one hand-off to a thread costs here
  (~100 µs each way), and a turn makes dozens of them. ``inline=False`` runs them on a
  dedicated writer thread and a reader pool instead (one hop per statement, ``BEGIN`` riding
  along with the first). We hand-write this rather than use aiosqlite, which makes several
  thread hops per statement (cursor, execute, fetch, close): a one-row read cost ~1 ms.
  The price of inline execution: another *process* holding the write lock (a CLI command)
  stalls the loop for up to the busy timeout; Hangar's own writes never contend.
- PostgreSQL (psycopg 3, natively async): ordinary read-committed transactions; rows that must
  not race are claimed with ``FOR UPDATE`` (and ``SKIP LOCKED`` for queues).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.adapt import Transformer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hangar.store.prepared import Compiled, Prepared

T = TypeVar("T")


def now_us() -> int:
    return time.time_ns() // 1000


class Buffered:
    """A result whose rows were fetched where the statement ran."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: Sequence[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    @classmethod
    def of(cls, result: sa.CursorResult[Any]) -> Buffered:
        rows = result.all() if result.returns_rows else []
        return cls(rows, result.rowcount)

    def all(self) -> list[sa.Row[Any]]:
        return list(self._rows)

    def first(self) -> sa.Row[Any] | None:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Iterator[sa.Row[Any]]:
        return iter(self._rows)


Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
"""Named parameters of a :class:`Prepared` statement; a sequence runs it once per mapping."""


class Conn(Protocol):
    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Buffered: ...

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any: ...

    async def run(self, prepared: Prepared, params: Params = None) -> Buffered:
        """Run a hot statement on the driver's connection (see :mod:`hangar.store.prepared`)."""
        ...

    async def defer(self, prepared: Prepared, params: Mapping[str, Any]) -> Later:
        """Run a write whose result nobody needs yet. In a PostgreSQL transaction it is sent
        with the transaction's next statement or its ``COMMIT`` (one round trip for several);
        its error, if any, surfaces there, and its result is in the returned ``Later`` from
        then on. Elsewhere it runs at once."""
        ...


class Later:
    """The result of a deferred statement: ``None`` until the statement has been sent."""

    __slots__ = ("result",)

    def __init__(self, result: Buffered | None = None) -> None:
        self.result = result


class RowChanged(Exception):
    """A guard statement (see ``SessionStore.expect``) found that the row it protects is no
    longer the version the transaction was built on; the transaction was rolled back."""


GUARD_SQLSTATE = "HG001"  # raised by the guard function of migration 0007


async def _buffered(cur: psycopg.AsyncCursor[Any], compiled: Compiled) -> Buffered:
    """The current result of a psycopg cursor, fetched."""
    description = cur.description  # psycopg builds it anew on every access
    rows = await cur.fetchall() if description else []
    return Buffered(compiled.rows(description, rows), cur.rowcount)


class _AsyncConn:
    """``Conn`` over a natively async SQLAlchemy connection (PostgreSQL)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._driver: Any = None  # psycopg's AsyncConnection, fetched on the first `run`

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Buffered:
        result = await self._conn.execute(statement, parameters)
        return Buffered.of(result)

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def run(self, prepared: Prepared, params: Params = None) -> Buffered:
        compiled = prepared.compiled(self._conn.dialect)
        async with (await self.driver()).cursor() as cur:
            if isinstance(params, Sequence):
                await cur.executemany(compiled.sql, [compiled.args(p) for p in params])
                return Buffered([], cur.rowcount)
            await cur.execute(compiled.sql, compiled.args(params))
            return await _buffered(cur, compiled)

    async def defer(self, prepared: Prepared, params: Mapping[str, Any]) -> Later:
        return Later(await self.run(prepared, params))

    async def driver(self) -> psycopg.AsyncConnection[Any]:
        if self._driver is None:
            self._driver = (await self._conn.get_raw_connection()).driver_connection
        return self._driver  # type: ignore[no-any-return]


_MOGRIFY_CACHED_PARAMS = 50  # psycopg._queries.MAX_CACHED_STATEMENT_PARAMS
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A ``%(name)s`` statement as its literal parts and the parameter names between them
    (``%%`` is a literal ``%``)."""
    parts, names, last = [""], [], 0
    for m in _PLACEHOLDER.finditer(sql):
        parts[-1] += sql[last : m.start()]
        if m.group(1) is None:
            parts[-1] += "%"
        else:
            names.append(m.group(1))
            parts.append("")
        last = m.end()
    parts[-1] += sql[last:]
    return tuple(parts), tuple(names)


class _BatchedTx:
    """``Conn`` for one PostgreSQL write transaction, sent in as few round trips as it can be.

    The connection is in autocommit mode and the transaction is spelled out: ``BEGIN`` rides
    with the first statement, ``defer``-red writes wait and ride with the next statement or
    with the ``COMMIT``, all in one simple-protocol query with the parameters bound on the
    client (psycopg's ``ClientCursor.mogrify``). A journal transaction (lock the session row;
    insert events, mark input, update the session) is then two round trips instead of six:
    each costs ~120 µs of driver time even on loopback, and more on a real network.
    Statements that are not :class:`Prepared` go through SQLAlchemy on the same connection,
    after the queue has been sent."""

    def __init__(self, held: _AsyncConn, driver: psycopg.AsyncConnection[Any]) -> None:
        self._held = held
        self._cursor = psycopg.AsyncClientCursor(driver)
        self._literals = Transformer(driver)
        self._queue: list[str] = ["BEGIN"]
        self._later: dict[int, tuple[Later, Compiled]] = {}  # queue index → where its result goes
        self._begun = False

    def _bind(self, prepared: Prepared, params: Mapping[str, Any] | None) -> tuple[str, Compiled]:
        compiled = prepared.compiled(self._held.connection.dialect)
        args = compiled.args(params)
        if len(args) <= _MOGRIFY_CACHED_PARAMS:
            return self._cursor.mogrify(compiled.sql, args), compiled
        # psycopg parses the SQL of a statement with more parameters again on every call (its
        # cache skips them); a multi-row INSERT of 32 events then costs 1 ms to bind instead of
        # 0.3. Such statements are split once here and their values quoted by psycopg itself.
        parts, names = _pyformat(compiled.sql)
        quote = self._literals.as_literal
        encoding = self._cursor.connection.info.encoding
        out = [parts[0]]
        for name, part in zip(names, parts[1:], strict=True):
            out += (quote(args[name]).decode(encoding), part)
        return "".join(out), compiled

    async def _send(self, last: str | None) -> psycopg.AsyncClientCursor[Any]:
        parts = self._queue if last is None else [*self._queue, last]
        later, self._later = self._later, {}
        self._queue = []
        self._begun = True
        try:
            await self._cursor.execute(";\n".join(parts))
        except psycopg.Error as exc:
            if exc.sqlstate == GUARD_SQLSTATE:
                raise RowChanged(str(exc)) from exc
            raise
        index = 0
        while True:  # to the last statement's result, handing deferred results on the way
            if index in later:
                sink, compiled = later[index]
                sink.result = await _buffered(self._cursor, compiled)
            if not self._cursor.nextset():
                break
            index += 1
        return self._cursor

    async def defer(self, prepared: Prepared, params: Mapping[str, Any]) -> Later:
        sql, compiled = self._bind(prepared, params)
        sink = Later()
        self._later[len(self._queue)] = (sink, compiled)
        self._queue.append(sql)
        return sink

    async def run(self, prepared: Prepared, params: Params = None) -> Buffered:
        if isinstance(params, Sequence):
            if self._queue:
                await self._send(None)
            return await self._held.run(prepared, params)
        sql, compiled = self._bind(prepared, params)
        return await _buffered(await self._send(sql), compiled)

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Buffered:
        if self._queue:
            await self._send(None)
        return await self._held.execute(statement, parameters)

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def commit(self) -> None:
        if self._begun or len(self._queue) > 1:
            await self._send("COMMIT")
        self._queue = []

    async def rollback(self) -> None:
        self._queue = []
        self._later = {}
        if self._begun:
            # ROLLBACK also ends a transaction that a failed statement aborted; if the
            # connection itself failed, this fails too and `_Held` discards the connection.
            with contextlib.suppress(psycopg.Error):
                await self._cursor.execute("ROLLBACK")


class Database:
    """An engine plus the transaction discipline of its dialect."""

    dialect: str = "generic"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        raise NotImplementedError
        yield  # pragma: no cover

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[Conn]:
        """A write transaction. ``durable=False`` may skip waiting for the commit to reach the
        disk where the engine allows it (PostgreSQL ``synchronous_commit=off``): for writes no
        client is waiting on, which a database crash could only roll back as a whole."""
        raise NotImplementedError
        yield  # pragma: no cover

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Conn]:
        """A connection whose statements each commit on their own, without waiting for the
        disk where the engine allows it: for the loop's one-statement bookkeeping writes."""
        async with self.write(durable=False) as conn:
            yield conn

    def for_update(self, stmt: sa.Select[Any], of: sa.Table | None = None) -> sa.Select[Any]:
        """``stmt`` locking the rows it reads (of ``of`` only, e.g. the outer side of a join)."""
        return stmt

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        raise NotImplementedError


class _Held:
    """A few connections checked out of SQLAlchemy's pool once and then handed out by this
    class: an async checkout and return through the pool costs ~170 µs of Python each (more than
    the statement on a local server), and a turn takes a dozen. A connection the database
    dropped (SQLAlchemy marks it invalidated) or that failed half-way is closed, not reused; the
    next user opens a fresh one."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_AsyncConn] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_AsyncConn]:
        async with self._slots:
            held = self._idle.pop() if self._idle else _AsyncConn(await self._engine.connect())
            reusable = False
            try:
                yield held
                conn = held.connection
                if not (conn.invalidated or conn.closed):
                    # Checked first: with a transaction still open on the server, the commit
                    # below would send COMMIT for work that was never meant to be committed.
                    idle = (await held.driver()).info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    if idle and conn.in_transaction():
                        # Every pool here is in autocommit mode: this is SQLAlchemy's own
                        # "autobegin" bookkeeping, which ends without a round trip.
                        await conn.commit()
                    reusable = idle
            finally:
                if reusable:
                    self._idle.append(held)
                elif not held.connection.closed:
                    # Possibly mid-statement (a cancelled task) or mid-transaction: never reuse.
                    await held.connection.invalidate()
                    await held.connection.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            await held.connection.close()


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine, relaxed: AsyncEngine | None = None) -> None:
        self.engine = engine
        # Every connection is in autocommit mode. Reads need no transaction (under READ
        # COMMITTED each statement takes its own snapshot anyway); write transactions are
        # spelled out by `_BatchedTx`. Non-durable writes use connections opened with
        # synchronous_commit=off.
        self._readers = _Held(_autocommit(engine), 10)
        self._writers = _Held(_autocommit(engine), 10)
        self._relaxed = relaxed or engine
        self._relaxed_writers = _Held(_autocommit(self._relaxed), 4)
        self._relaxed_single = _Held(_autocommit(self._relaxed), 4)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with self._readers.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[Conn]:
        pool = self._writers if durable else self._relaxed_writers
        async with pool.acquire() as conn:
            tx = _BatchedTx(conn, await conn.driver())
            try:
                yield tx
                await tx.commit()  # deferred writes fail here, if they fail
            except Exception:
                await tx.rollback()
                raise
            # A BaseException (a cancelled task) skips both: the connection may be mid-statement,
            # so `_Held` discards it, which ends the transaction on the server.

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Conn]:
        # No BEGIN and COMMIT round trips around a single statement.
        async with self._relaxed_single.acquire() as conn:
            yield conn

    def for_update(self, stmt: sa.Select[Any], of: sa.Table | None = None) -> sa.Select[Any]:
        return stmt.with_for_update(of=of)

    async def close(self) -> None:
        for pool in (self._readers, self._writers, self._relaxed_writers, self._relaxed_single):
            await pool.close()
        await self.engine.dispose()
        if self._relaxed is not self.engine:
            await self._relaxed.dispose()


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _abandon(conn: sa.Connection) -> None:
    """Roll back whatever transaction ``conn`` has open, in SQLAlchemy and in sqlite3."""
    with contextlib.suppress(Exception):
        conn.rollback()
    with contextlib.suppress(Exception):
        driver = conn.connection.driver_connection
        if driver.in_transaction:  # type: ignore[union-attr]
            driver.rollback()  # type: ignore[union-attr]


class _ThreadConn:
    """``Conn`` whose statements run on an executor thread (or inline); the transaction opens
    lazily, with the first statement.

    The transaction is begun and ended on the sqlite3 connection itself (``BEGIN DEFERRED`` or
    ``IMMEDIATE``, ``commit()``/``rollback()``): SQLAlchemy's ``begin()`` and its commit or
    rollback cost ~100 µs of Python each, more than a read on the hot path. A statement that goes
    through SQLAlchemy (``execute``) makes it begin its own bookkeeping too (its ``begin`` event
    then sees the transaction already open); ``finish`` then ends it through SQLAlchemy."""

    def __init__(
        self,
        executor: concurrent.futures.ThreadPoolExecutor | None,
        connect: Callable[[], sa.Connection],
        *,
        close_after: bool,
        begin: str = "DEFERRED",
    ) -> None:
        self._executor = executor
        self._connect = connect
        self._close_after = close_after
        self._begin = f"BEGIN {begin}"
        self._conn: sa.Connection | None = None
        self._begun = False
        self._last: asyncio.Future[Any] | None = None

    def _ensure(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._connect()
        if not self._begun:
            driver = self._conn.connection.driver_connection
            if driver.in_transaction:  # type: ignore[union-attr]
                # Never join a transaction someone else left open on a reused connection
                # (`finish` ends every one, even when its COMMIT fails; this is the backstop).
                _abandon(self._conn)
            driver.execute(self._begin)  # type: ignore[union-attr]
            self._begun = True
        return self._conn

    @property
    def connection(self) -> sa.Connection | None:
        """The SQLAlchemy connection, once a statement has run."""
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            return fn()
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        self._last = future
        return await future

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Buffered:
        def work() -> Buffered:
            conn = self._ensure()
            return Buffered.of(conn.execute(statement, parameters))

        return await self._run(work)

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def run(self, prepared: Prepared, params: Params = None) -> Buffered:
        def work() -> Buffered:
            conn = self._ensure()
            compiled = prepared.compiled(conn.dialect)
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if isinstance(params, Sequence):
                    cur.executemany(compiled.sql, [compiled.args(p) for p in params])
                    return Buffered([], cur.rowcount)
                cur.execute(compiled.sql, compiled.args(params))
                rows = cur.fetchall() if cur.description else []
                return Buffered(compiled.rows(cur.description, rows), cur.rowcount)
            finally:
                cur.close()

        return await self._run(work)

    async def defer(self, prepared: Prepared, params: Mapping[str, Any]) -> Later:
        return Later(await self.run(prepared, params))

    async def finish(self, commit: bool) -> None:
        # A statement abandoned by a cancelled task may still be running: let it end first,
        # so the connection is never used by two threads at once.
        if self._last is not None and not self._last.done():
            await asyncio.shield(asyncio.wait([self._last]))
        if self._conn is None:
            return
        conn = self._conn

        self._begun = False

        def work() -> None:
            try:
                if conn.in_transaction():  # SQLAlchemy began too: it ends the transaction
                    conn.commit() if commit else conn.rollback()
                else:
                    driver = conn.connection.driver_connection
                    if driver.in_transaction:  # type: ignore[union-attr]
                        driver.commit() if commit else driver.rollback()  # type: ignore[union-attr]
            except BaseException:
                _abandon(conn)  # a failed COMMIT leaves the transaction open
                raise
            finally:
                if self._close_after:
                    conn.close()

        if self._executor is None:
            work()
        else:
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, work))


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(
        self, url: str, readers: int = 4, *, inline: bool = True, synchronous: str = "NORMAL"
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.inline = inline
        sync_url = url.replace("sqlite+aiosqlite://", "sqlite://")
        self.engine = sa.create_engine(
            sync_url,
            connect_args={"check_same_thread": False, "isolation_level": None},
            pool_size=readers + 1,
            max_overflow=readers,
        )
        self._writer_lock = asyncio.Lock()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hangar-sqlite-writer")
        self._readers = concurrent.futures.ThreadPoolExecutor(
            readers, thread_name_prefix="hangar-sqlite-reader"
        )
        self._write_conn: sa.Connection | None = None
        # Inline reads reuse a few connections rather than checking one out of SQLAlchemy's
        # pool and back for every read (~150 µs of Python, and a turn reads four times).
        self._idle_readers: list[sa.Connection] = []
        self._max_idle_readers = readers

        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(self.engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            driver = conn.connection.driver_connection
            if driver.in_transaction:  # type: ignore[union-attr]
                return  # begun by `_ThreadConn`
            mode = "IMMEDIATE" if conn.get_execution_options().get("hangar_write") else "DEFERRED"
            driver.execute(f"BEGIN {mode}")  # type: ignore[union-attr]

    def _writer_conn(self) -> sa.Connection:
        # Runs on the writer thread only; the connection lives as long as the database.
        if self._write_conn is None or self._write_conn.closed:
            self._write_conn = self.engine.connect().execution_options(hangar_write=True)
        return self._write_conn

    def _reader(self) -> sa.Connection:
        # Taken when the read runs its first statement (another read may have taken one since).
        return self._idle_readers.pop() if self._idle_readers else self.engine.connect()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        if not self.inline:
            conn = _ThreadConn(self._readers, self.engine.connect, close_after=True)
            try:
                yield conn
            finally:
                await conn.finish(commit=False)
            return
        idle = self._idle_readers
        conn = _ThreadConn(None, self._reader, close_after=False)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            try:
                await conn.finish(commit=False)
            finally:
                held = conn.connection
                if held is not None:
                    reusable = ok and not (held.closed or held.invalidated)
                    if reusable and len(idle) < self._max_idle_readers:
                        idle.append(held)
                    elif not held.closed:
                        held.close()

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[Conn]:
        # WAL with synchronous=NORMAL: no commit waits for the disk; every commit survives the
        # process being killed, so `durable` changes nothing here.
        async with self._writer_lock:
            conn = _ThreadConn(
                None if self.inline else self._writer, self._writer_conn, close_after=False, begin="IMMEDIATE"
            )
            ok = False
            try:
                yield conn
                ok = True
            finally:
                await conn.finish(commit=ok)

    async def close(self) -> None:
        idle, self._idle_readers = self._idle_readers, []
        for held in idle:
            held.close()

        def shutdown() -> None:
            if self._write_conn is not None:
                self._write_conn.close()

        if self.inline:
            shutdown()
        else:
            await asyncio.get_running_loop().run_in_executor(self._writer, shutdown)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


def open_database(url: str, durability: str = "process") -> Database:
    """Open the database at an async SQLAlchemy URL (see ``Settings.resolved_database_url``).

    ``durability`` (``Settings.durability``): ``"process"``, every acknowledged write survives
    Hangar's process dying at any moment, and an operating-system (or PostgreSQL) crash may
    lose the last fraction of a second of writes (SQLite ``synchronous=NORMAL`` in WAL mode,
    PostgreSQL ``synchronous_commit=off``); ``"disk"``, a write is acknowledged only once it
    is on disk (SQLite ``synchronous=FULL``; PostgreSQL ``synchronous_commit=on`` for client
    writes, the loop's own transitions stay relaxed: a crash can only roll them back whole)."""
    if durability not in ("process", "disk"):
        raise ValueError(f"durability must be 'process' or 'disk', not {durability!r}")
    if url.startswith("sqlite"):
        return SqliteDatabase(url, synchronous="FULL" if durability == "disk" else "NORMAL")
    # No pre-ping: it costs a round trip on every checkout. A connection the server dropped
    # fails one statement, SQLAlchemy then discards the whole pool, and the next one reconnects.
    relaxed_args = {"options": "-c synchronous_commit=off"}
    if durability == "process":
        engine = create_async_engine(
            url, pool_size=14, max_overflow=20, pool_recycle=3600, connect_args=relaxed_args
        )
        return PostgresDatabase(engine, engine)
    engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_recycle=3600)
    relaxed = create_async_engine(
        url, pool_size=4, max_overflow=8, pool_recycle=3600, connect_args=relaxed_args
    )
    return PostgresDatabase(engine, relaxed)
