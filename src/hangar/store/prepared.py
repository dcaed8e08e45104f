"""Hot statements, compiled once per dialect and run on the driver's own connection.

SQLAlchemy Core still writes every statement (so the SQL is dialect-correct and checked
against ``schema.py``), but *executing* a Core construct costs ~150 µs of Python per statement
(building the construct, its cache key, parameter and result processing) against ~20 µs for
sqlite3 itself, and a turn runs a dozen statements on its hot path. So the few statements that
every turn, append and stream catch-up run are :class:`Prepared`: compiled to a SQL string once
per dialect and handed to the DBAPI cursor directly (psycopg then also prepares them on the
server after a few executions). Everything else goes through ``Conn.execute`` as usual.

What SQLAlchemy would do for us and we do here: JSON parameters are serialised with
``json.dumps`` (the same as SQLAlchemy's default serializer, which the engines use), JSON result
columns are parsed (SQLite returns text; psycopg returns them parsed already), and positional
drivers (sqlite3's ``qmark``) get their parameters in the compiled order.

Values of an ``IN`` list must be part of the SQL (``literal_in``), as expanding parameters
cannot be compiled ahead of time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler


def literal_in(column: sa.ColumnElement[Any], values: Iterable[str]) -> sa.ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the values in the SQL: for constant lists of simple names."""
    rendered: list[sa.ColumnElement[Any]] = []
    for value in values:
        if not value.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"not a simple constant: {value!r}")
        rendered.append(sa.literal_column(f"'{value}'"))
    return column.in_(rendered)


class Row:
    """A result row: positional access and ``_mapping``, like the part of ``sa.Row`` we use."""

    __slots__ = ("_mapping", "_values")

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._values = tuple(values)
        self._mapping = dict(zip(names, self._values, strict=True))

    def __getitem__(self, index: int) -> Any:
        return self._values[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Compiled:
    sql: str
    positional: tuple[str, ...] | None  # parameter order for positional drivers, else None
    json_params: frozenset[str]
    json_columns: frozenset[str]
    parse_json: bool  # the driver returns JSON columns as text
    defaults: Mapping[str, Any]  # values the statement itself binds (e.g. SQLite's OFFSET 0)

    def args(self, params: Mapping[str, Any] | None) -> Any:
        params = {**self.defaults, **(params or {})} if self.defaults else (params or {})
        if self.json_params:
            # As SQLAlchemy's JSON type does by default, None is stored as JSON ``null``.
            params = {k: (json.dumps(v) if k in self.json_params else v) for k, v in params.items()}
        if self.positional is not None:
            return tuple(params[name] for name in self.positional)
        return params

    def rows(self, description: Sequence[Sequence[Any]] | None, raw: Sequence[Sequence[Any]]) -> list[Row]:
        if not description:
            return []
        names = [d[0] for d in description]
        if self.parse_json and self.json_columns:
            parse = [name in self.json_columns for name in names]
            return [Row(names, [_json(v) if p else v for v, p in zip(r, parse, strict=True)]) for r in raw]
        return [Row(names, r) for r in raw]


class Prepared:
    """A statement with named ``bindparam``s, compiled on first use for each dialect."""

    def __init__(self, statement: sa.ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> Compiled:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
        binds = compiled.binds.items()
        json_params = frozenset(name for name, bind in binds if isinstance(bind.type, sa.JSON))
        selected = getattr(self.statement, "selected_columns", None)
        if selected is None:
            selected = getattr(self.statement, "_returning", ()) or ()
        json_columns = frozenset(c.name for c in selected if isinstance(getattr(c, "type", None), sa.JSON))
        positional = tuple(compiled.positiontup or ()) if dialect.positional else None
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        return Compiled(
            sql=compiled.string,
            positional=positional,
            json_params=json_params,
            json_columns=json_columns,
            parse_json=dialect.name == "sqlite",
            defaults=defaults,
        )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
