"""Files on the wire (SDK ``BetaFileMetadata``, ``BetaDeletedFile``; API.md §1.12, BEHAVIOUR §13).

Uploads are ``downloadable:false`` with no scope; session copies (mounts) get a new id, a
``{type:"session", id}`` scope and stay undownloadable; session outputs are downloadable.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any, Final

from hangar.errors import InvalidRequest
from hangar.wire.common import ts

EXPIRES_MIN_S: Final = 3600
EXPIRES_MAX_S: Final = 7_776_000
FILENAME_MAX: Final = 255
IDS_MAX: Final = 100
LIMIT_DEFAULT: Final = 20
LIMIT_MAX: Final = 1000
CURSOR_PREFIX: Final = "page_"
OCTET_STREAM: Final = "application/octet-stream"

_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def guess_mime(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or OCTET_STREAM


def resolve_mime(content_type: str | None, filename: str) -> str:
    """The part's own media type (parameters dropped), else a guess from the name."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        if _MIME.match(base) and base != OCTET_STREAM:
            return base
    return guess_mime(filename)


def clean_filename(raw: str | None, mime_type: str, *, truncate: bool = False) -> str:
    """Keep only the last path component; an empty name becomes ``unnamed[.ext]``.

    A name over ``FILENAME_MAX`` characters is a 400, or with ``truncate`` (names the agent
    chose) is shortened, keeping its extension.
    """
    name = _CONTROL.sub("", (raw or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if name in ("", ".", ".."):
        ext = mimetypes.guess_extension(mime_type, strict=False) if mime_type != OCTET_STREAM else None
        return "unnamed" + (ext or "")
    if len(name) > FILENAME_MAX and truncate:
        stem, dot, ext = name.rpartition(".")
        keep = ("." + ext) if dot and stem and len(ext) < 16 else ""
        return stem[: FILENAME_MAX - len(keep)] + keep if keep else name[:FILENAME_MAX]
    if len(name) > FILENAME_MAX:
        raise InvalidRequest(f"file: the filename must be at most {FILENAME_MAX} characters, got {len(name)}")
    return name


def parse_expires_in(raw: str | None) -> int | None:
    """The ``expires_in_seconds`` form field (3600 to 7776000), or ``None`` when absent."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise InvalidRequest(f"expires_in_seconds: {raw!r} is not an integer") from exc
    if not EXPIRES_MIN_S <= value <= EXPIRES_MAX_S:
        raise InvalidRequest(
            f"expires_in_seconds: must be between {EXPIRES_MIN_S} and {EXPIRES_MAX_S}, got {value}"
        )
    return value


def file_object(
    *,
    file_id: str,
    filename: str,
    mime_type: str,
    size_bytes: int,
    created_at: int,
    downloadable: bool,
    expires_at: int | None,
    scope_type: str | None,
    scope_id: str | None,
) -> dict[str, Any]:
    """The ``BetaFileMetadata`` echo."""
    return {
        "type": "file",
        "id": file_id,
        "filename": filename,
        "mime_type": mime_type,
        "size_bytes": size_bytes,
        "created_at": ts(created_at),
        "downloadable": downloadable,
        "expires_at": ts(expires_at),
        "scope": {"type": scope_type, "id": scope_id} if scope_type and scope_id else None,
    }


def deleted_object(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "type": "file_deleted"}
