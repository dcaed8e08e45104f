"""Session, thread and session-resource wire shapes (SDK ``BetaManagedAgentsSession`` & co)."""

from __future__ import annotations

import posixpath
from typing import Any, Final

from hangar.errors import InvalidRequest
from hangar.store.sessions import SessionRecord, ThreadRecord
from hangar.wire.common import ts

STATUSES: Final = ("rescheduling", "running", "idle", "terminated")
MAX_INITIAL_EVENTS: Final = 50
MAX_TITLE: Final = 500
MAX_FILES_PER_SESSION: Final = 100
UPLOADS_ROOT: Final = "/mnt/session/uploads"


def zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "server_tool_use": {"web_fetch_requests": 0, "web_search_requests": 0},
        "list_cost": {"amount": "0", "currency": "USD"},
        "active_seconds": 0.0,
    }


def active_seconds(data: dict[str, Any], now: int) -> float:
    """Seconds spent running: the closed intervals plus the open one, if running now."""
    total = float(data.get("active_us", 0))
    since = data.get("running_since")
    if since is not None:
        total += max(0, now - since)
    return round(total / 1_000_000, 6)


def session_wire(rec: SessionRecord, resources: list[dict[str, Any]], now: int) -> dict[str, Any]:
    data = rec.data
    end = rec.archived_at or now
    active = active_seconds(data, now)
    usage = {**data["usage"], "active_seconds": active}
    return {
        "type": "session",
        "id": rec.id,
        "title": data.get("title"),
        "metadata": data.get("metadata", {}),
        "environment_id": rec.environment_id,
        "deployment_id": None,
        "status": rec.status,
        "agent": data["agent"],
        "resources": resources,
        "vault_ids": data.get("vault_ids", []),
        "budget": data.get("budget"),
        "stats": {"active_seconds": active, "duration_seconds": round(max(0, end - rec.created_at) / 1e6, 6)},
        "usage": usage,
        "outcome_evaluations": data.get("outcome_evaluations", []),
        "created_at": ts(rec.created_at),
        "updated_at": ts(rec.updated_at),
        "archived_at": ts(rec.archived_at),
    }


def thread_wire(rec: ThreadRecord, now: int, session: SessionRecord | None = None) -> dict[str, Any]:
    """A thread as the API shows it. The primary thread mirrors its session: pass the session
    record and its status, timing and usage are read from there (one row per turn to write)."""
    data = rec.data
    status = rec.status
    if session is not None and rec.parent_thread_id is None:
        sdata = session.data
        data = {
            **data,
            "first_status_at": sdata.get("first_run_at"),
            "active_us": sdata.get("active_us", 0),
            "running_since": sdata.get("running_since"),
        }
        if sdata.get("turns"):
            usage = sdata["usage"]
            data["usage"] = {
                k: usage.get(k)
                for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation")
            }
        status = session.status
    started = data.get("first_status_at")
    stats = None
    if started is not None:
        stats = {
            "active_seconds": active_seconds(data, now),
            "duration_seconds": round(max(0, (rec.archived_at or now) - rec.created_at) / 1e6, 6),
            "startup_seconds": round(max(0, started - rec.created_at) / 1e6, 6),
        }
    return {
        "type": "session_thread",
        "id": rec.id,
        "session_id": rec.session_id,
        "parent_thread_id": rec.parent_thread_id,
        "agent": data["agent"],
        "status": status,
        "stats": stats,
        "usage": data.get("usage"),
        "workflow_run_id": None,
        "created_at": ts(rec.created_at),
        "updated_at": ts(rec.updated_at),
        "archived_at": ts(rec.archived_at),
    }


def file_mount_path(raw: Any, file_id: str, path: str) -> str:
    """Mount paths are re-rooted under ``/mnt/session/uploads/`` (BEHAVIOUR §13)."""
    if raw is None:
        return f"{UPLOADS_ROOT}/{file_id}"
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest(f"{path}: expected a non-empty string")
    if "\x00" in raw:
        raise InvalidRequest(f"{path}: must not contain NUL characters")
    rel = raw[len(UPLOADS_ROOT) :] if raw.startswith(UPLOADS_ROOT + "/") else raw
    normal = posixpath.normpath("/" + rel.lstrip("/")) if not rel.startswith("..") else None
    if normal is None or ".." in rel.split("/"):
        raise InvalidRequest(f'Invalid file resource: mount path "{raw}" escapes /uploads/')
    return UPLOADS_ROOT + normal


def check_mount_overlap(paths: list[str], new: str) -> None:
    for existing in paths:
        if existing == new or existing.startswith(new + "/") or new.startswith(existing + "/"):
            raise InvalidRequest(
                f"Invalid file resource: `mount_path` overlaps another resource: {new[len('/mnt/session') :]}"
            )
