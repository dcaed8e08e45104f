"""Keyset pagination over ``(created_at, id)`` with opaque, order-bound cursors."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from hangar.errors import InvalidRequest
from hangar.store.db import Conn

Order = Literal["asc", "desc"]
Direction = Literal["next", "prev"]


@dataclass(frozen=True)
class Cursor:
    key: tuple[int, str]
    order: Order
    direction: Direction = "next"

    def encode(self, prefix: str = "") -> str:
        raw = json.dumps([self.key[0], self.key[1], self.order, self.direction], separators=(",", ":"))
        return prefix + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, order: Order, prefix: str = "") -> Cursor:
        body = token[len(prefix) :] if prefix and token.startswith(prefix) else token
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            created, ident, cursor_order, direction = json.loads(raw)
            if not isinstance(created, int) or not isinstance(ident, str):
                raise ValueError("bad key")
            if direction not in ("next", "prev") or cursor_order not in ("asc", "desc"):
                raise ValueError("bad direction")
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest("invalid page cursor") from exc
        if cursor_order != order:
            raise InvalidRequest("page token order does not match request")
        return cls((created, ident), cursor_order, direction)


@dataclass(frozen=True)
class Page:
    rows: list[sa.Row[Any]]
    next_cursor: str | None
    prev_cursor: str | None


async def keyset_page(
    conn: Conn,
    stmt: sa.Select[Any],
    created_col: sa.ColumnElement[int],
    id_col: sa.ColumnElement[str],
    *,
    order: Order,
    limit: int,
    page: str | None,
    prefix: str = "",
) -> Page:
    """Run ``stmt`` one page at a time, newest or oldest first, forwards or backwards."""
    cursor = Cursor.decode(page, order, prefix) if page else None
    direction: Direction = cursor.direction if cursor else "next"
    # Walking backwards is walking forwards in the opposite order, then reversing.
    walk_desc = (order == "desc") == (direction == "next")
    key = sa.tuple_(created_col, id_col)
    if cursor is not None:
        bound = sa.tuple_(sa.literal(cursor.key[0]), sa.literal(cursor.key[1]))
        stmt = stmt.where(key < bound if walk_desc else key > bound)
    if walk_desc:
        stmt = stmt.order_by(created_col.desc(), id_col.desc())
    else:
        stmt = stmt.order_by(created_col.asc(), id_col.asc())
    rows = list((await conn.execute(stmt.limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "prev":
        rows.reverse()
    if not rows:
        return Page(rows, None, None)

    created_key, id_key = str(created_col.key), str(id_col.key)

    def key_of(row: sa.Row[Any]) -> tuple[int, str]:
        return (row._mapping[created_key], row._mapping[id_key])

    first, last = key_of(rows[0]), key_of(rows[-1])
    has_next = more if direction == "next" else True
    has_prev = (cursor is not None) if direction == "next" else more
    next_cursor = Cursor(last, order, "next").encode(prefix) if has_next else None
    prev_cursor = Cursor(first, order, "prev").encode(prefix) if has_prev else None
    return Page(rows, next_cursor, prev_cursor)


async def newest_first(
    conn: Conn,
    table: sa.Table,
    *where: sa.ColumnElement[bool],
    include_archived: bool,
    limit: int,
    page: str | None,
) -> Page:
    """One page of ``table`` rows matching ``where``, newest first, archived ones only when
    asked for (the list endpoints of environments, vaults, credentials, tunnels, certificates)."""
    stmt = sa.select(table).where(*where)
    if not include_archived:
        stmt = stmt.where(table.c.archived_at.is_(None))
    return await keyset_page(conn, stmt, table.c.created_at, table.c.id, order="desc", limit=limit, page=page)
