"""Shared wire helpers: timestamps, metadata rules, parsing with JSON-path error messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hangar.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


class Strict(BaseModel):
    """Base for request bodies: unknown fields are rejected, like the hosted parser does."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def ts(micros: int | None) -> str | None:
    """Microseconds since the epoch → RFC 3339 in UTC (``2026-11-22T02:43:01.123456Z``)."""
    if micros is None:
        return None
    dt = datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str, name: str) -> int:
    """An RFC 3339 / ``isoformat()`` query value → microseconds since the epoch."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {value!r} is not a valid RFC 3339 timestamp") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


def json_path(loc: tuple[int | str, ...]) -> str:
    """``("tools", 0, "configs", 1, "name")`` → ``tools[0].configs[1].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "body"


def _describe(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        msg = str(err.get("msg", ""))
        return f"{err.get('input')!r} is not a valid value; {msg[:1].lower()}{msg[1:]}"
    return str(err.get("msg", "invalid value"))


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[int | str, ...]:
    """Keep only the keys and indices the client sent.

    pydantic puts union tags and validator names (``"text"``, ``function-after[...]``) into
    error locations; walking the input alongside tells them apart from real keys. A name that
    is not in the input is kept only when it is the last part (a missing field).
    """
    out: list[int | str] = []
    cur = data
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(cur, list) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and isinstance(cur, dict) and part in cur:
            # A tag equal to a key: more parts follow, but a scalar has no inside.
            if i == last or isinstance(cur[part], dict | list):
                out.append(part)
                cur = cur[part]
        elif i == last and isinstance(part, str) and "[" not in part:
            out.append(part)
    return tuple(out)


def validation_message(exc: ValidationError, prefix: str = "", data: Any = None) -> str:
    err = exc.errors()[0]
    path = json_path(_clean_loc(tuple(err["loc"]), data))
    return f"{prefix}{path}: {_describe(err)}"


def parse(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate a request body, turning the first error into a 400 that names its JSON path."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{prefix}body: expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc, prefix, data)) from exc


def check_metadata(metadata: dict[str, Any] | None, path: str = "metadata", *, patch: bool = False) -> None:
    """Enforce the shared metadata limits (≤16 pairs, keys ≤64, values ≤512)."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequest(f"{path}: expected an object", error_code="invalid_metadata")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(
            f"{path}: at most {METADATA_MAX_PAIRS} key-value pairs are allowed", error_code="invalid_metadata"
        )
    for key, value in metadata.items():
        if not key or len(key) > METADATA_MAX_KEY:
            raise InvalidRequest(
                f"{path}: keys must be 1-{METADATA_MAX_KEY} characters, got {len(key)}",
                error_code="invalid_metadata",
            )
        if value is None and patch:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"{path}.{key}: values must be strings", error_code="invalid_metadata")
        if len(value) > METADATA_MAX_VALUE:
            raise InvalidRequest(
                f"{path}.{key}: values must be at most {METADATA_MAX_VALUE} characters",
                error_code="invalid_metadata",
            )


def merge_metadata(
    current: dict[str, str], patch: dict[str, str | None] | None, *, empty_deletes: bool = False
) -> dict[str, str]:
    """Apply a metadata patch: a string upserts, ``null`` deletes, omitted keys are kept."""
    if patch is None:
        return dict(current)
    out = dict(current)
    for key, value in patch.items():
        if value is None or (empty_deletes and value == ""):
            out.pop(key, None)
        else:
            out[key] = value
    if len(out) > METADATA_MAX_PAIRS:
        raise InvalidRequest(
            f"metadata: at most {METADATA_MAX_PAIRS} key-value pairs are allowed",
            error_code="invalid_metadata",
        )
    return out
