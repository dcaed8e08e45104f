"""Persistence of files: metadata rows in ``files``, bytes as blobs under ``files_dir``.

Durability order: a blob is written to a temporary file, fsynced and renamed into place (and
its directory fsynced) *before* the row is inserted; if the insert fails, the blob is removed.
Delete removes the row first, then the blob. So a row never points at a missing blob; the
worst a crash can leave behind is an orphaned blob, never a broken file.

Blobs live at ``files_dir/<last two id chars>/<file id>`` and are never modified in place.
A session copy (a mount) is a hard link when the filesystem allows it, else a byte copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

import anyio
import sqlalchemy as sa

from hangar.errors import NotFound
from hangar.ids import new_id
from hangar.store.db import Database, now_us
from hangar.store.paging import keyset_page
from hangar.store.schema import files
from hangar.wire.files import CURSOR_PREFIX, clean_filename, file_object, guess_mime

CHUNK: Final = 1024 * 1024
_SAFE_ID = re.compile(r"^file_[0-9a-z]{8,64}$")


@dataclass(frozen=True)
class FileRecord:
    id: str
    workspace_id: str
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    downloadable: bool
    scope_type: str | None
    scope_id: str | None
    created_at: int
    expires_at: int | None

    def expired(self, at: int | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (at if at is not None else now_us())

    def wire(self) -> dict[str, Any]:
        return file_object(
            file_id=self.id,
            filename=self.filename,
            mime_type=self.mime_type,
            size_bytes=self.size_bytes,
            created_at=self.created_at,
            downloadable=self.downloadable,
            expires_at=self.expires_at,
            scope_type=self.scope_type,
            scope_id=self.scope_id,
        )


def _record(row: sa.Row[Any]) -> FileRecord:
    m = row._mapping
    return FileRecord(**{f: m[f] for f in FileRecord.__dataclass_fields__})


def not_found(file_id: str) -> NotFound:
    return NotFound(f"File '{file_id}' not found")


def expired(file_id: str) -> NotFound:
    return NotFound(f"File '{file_id}' has expired", error_code="file_expired")


# -- blob I/O (blocking; run in a worker thread) ------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_blob(final: Path, source: bytes | IO[bytes]) -> tuple[int, str]:
    """Write ``source`` durably to ``final`` (temp file, fsync, rename). Returns (size, sha256)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
                digest.update(source)
                size = len(source)
            else:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return size, digest.hexdigest()


def _link_blob(src: Path, final: Path) -> None:
    """Give ``final`` the bytes of ``src``: a hard link if possible, else a durable copy."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, final)
        _fsync_dir(final.parent)
    except FileNotFoundError:
        raise
    except OSError:
        with src.open("rb") as fh:
            _write_blob(final, fh)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def path(file_id: str, files_dir: Path) -> Path:
        """Where the bytes of ``file_id`` live. Refuses ids that could escape ``files_dir``."""
        if not _SAFE_ID.match(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return files_dir / file_id[-2:] / file_id

    # -- reads --------------------------------------------------------------------------

    async def record(self, workspace_id: str, file_id: str) -> FileRecord | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(files).where(files.c.workspace_id == workspace_id, files.c.id == file_id)
                )
            ).first()
        return _record(row) if row is not None else None

    async def get(self, workspace_id: str, file_id: str) -> dict[str, Any] | None:
        """The file's ``BetaFileMetadata`` dict, or ``None`` (expired files are still listed)."""
        found = await self.record(workspace_id, file_id)
        return found.wire() if found is not None else None

    async def page(
        self, workspace_id: str, *, scope_id: str | None, limit: int, page: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, and the ``page_…`` cursor of the next one."""
        stmt = sa.select(files).where(files.c.workspace_id == workspace_id)
        if scope_id is not None:
            stmt = stmt.where(files.c.scope_id == scope_id)
        async with self.db.read() as conn:
            found = await keyset_page(
                conn,
                stmt,
                files.c.created_at,
                files.c.id,
                order="desc",
                limit=limit,
                page=page,
                prefix=CURSOR_PREFIX,
            )
        return [_record(r).wire() for r in found.rows], found.next_cursor

    async def by_ids(
        self, workspace_id: str, ids: list[str], *, scope_id: str | None
    ) -> list[dict[str, Any]]:
        """The files among ``ids`` that exist (unknown ids are dropped), newest first."""
        if not ids:
            return []
        stmt = sa.select(files).where(files.c.workspace_id == workspace_id, files.c.id.in_(ids))
        if scope_id is not None:
            stmt = stmt.where(files.c.scope_id == scope_id)
        stmt = stmt.order_by(files.c.created_at.desc(), files.c.id.desc())
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r).wire() for r in rows]

    # -- writes -------------------------------------------------------------------------

    async def _insert(self, record: FileRecord, files_dir: Path) -> dict[str, Any]:
        """Insert the row of a blob already in place; on failure the blob is removed."""
        try:
            async with self.db.write() as conn:
                await conn.execute(files.insert().values(**record.__dict__))
        except BaseException:
            _unlink(self.path(record.id, files_dir))  # tiny and must run even when cancelled
            raise
        return record.wire()

    async def create(
        self,
        workspace_id: str,
        *,
        filename: str,
        mime_type: str,
        source: bytes | IO[bytes],
        files_dir: Path,
        downloadable: bool = False,
        scope_id: str | None = None,
        expires_in_s: int | None = None,
    ) -> dict[str, Any]:
        """Store a new file (blob first, then its row) and return its wire object."""
        file_id = new_id("file")
        final = self.path(file_id, files_dir)
        size, sha = await anyio.to_thread.run_sync(_write_blob, final, source)
        at = now_us()
        record = FileRecord(
            id=file_id,
            workspace_id=workspace_id,
            filename=filename,
            mime_type=mime_type,
            size_bytes=size,
            sha256=sha,
            downloadable=downloadable,
            scope_type="session" if scope_id else None,
            scope_id=scope_id,
            created_at=at,
            expires_at=at + expires_in_s * 1_000_000 if expires_in_s is not None else None,
        )
        return await self._insert(record, files_dir)

    async def copy_to_session(
        self, workspace_id: str, file_id: str, session_id: str, files_dir: Path
    ) -> dict[str, Any]:
        """A session-scoped, undownloadable copy of ``file_id`` under a new id (BEHAVIOUR §13).

        Raises ``NotFound`` for an unknown file and ``NotFound(file_expired)`` for an expired one.
        """
        src = await self.record(workspace_id, file_id)
        if src is None:
            raise not_found(file_id)
        if src.expired():
            raise expired(file_id)
        copy_id = new_id("file")
        try:
            await anyio.to_thread.run_sync(
                _link_blob, self.path(src.id, files_dir), self.path(copy_id, files_dir)
            )
        except FileNotFoundError as exc:  # deleted while we were copying
            raise not_found(file_id) from exc
        record = FileRecord(
            id=copy_id,
            workspace_id=workspace_id,
            filename=src.filename,
            mime_type=src.mime_type,
            size_bytes=src.size_bytes,
            sha256=src.sha256,
            downloadable=False,
            scope_type="session",
            scope_id=session_id,
            created_at=now_us(),
            expires_at=None,
        )
        return await self._insert(record, files_dir)

    async def create_output(
        self,
        workspace_id: str,
        session_id: str,
        filename: str,
        data: bytes,
        files_dir: Path,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        """Record a file the agent wrote to ``/mnt/session/outputs/``: downloadable, scoped."""
        mime = mime_type or guess_mime(filename)
        return await self.create(
            workspace_id,
            filename=clean_filename(filename, mime, truncate=True),
            mime_type=mime,
            source=data,
            files_dir=files_dir,
            downloadable=True,
            scope_id=session_id,
        )

    async def delete(self, workspace_id: str, file_id: str, files_dir: Path) -> bool:
        """Remove the row, then the blob. ``False`` if there was no such file."""
        async with self.db.write() as conn:
            result = await conn.execute(
                files.delete().where(files.c.workspace_id == workspace_id, files.c.id == file_id)
            )
        if not result.rowcount:
            return False
        await anyio.to_thread.run_sync(_unlink, self.path(file_id, files_dir))
        return True

    async def open(self, record: FileRecord, files_dir: Path) -> BinaryIO:
        """Open the blob of ``record`` for reading (``NotFound`` if it vanished meanwhile)."""
        path = self.path(record.id, files_dir)
        try:
            return await anyio.to_thread.run_sync(path.open, "rb")
        except FileNotFoundError as exc:
            raise not_found(record.id) from exc
