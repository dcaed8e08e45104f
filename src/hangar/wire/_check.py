"""Hand-written request checks that name the JSON path of the first fault.

The hosted agent parser reports two kinds of faults, and we copy both:

- *parse* faults (wrong type, missing or unknown field, bad enum value, length limits):
  ``Failed to parse request: tools[0].configs[0].name: "find" is not a valid value; ...``
  with a bracketed path;
- *semantic* faults found after parsing (duplicates, cross-references): a dotted path such as
  ``tools.0.agent_toolset_20260401.configs.1: duplicate entry for tool "AGENT_TOOL_NAME_BASH"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from hangar.errors import InvalidRequest

PARSE_PREFIX = "Failed to parse request: "

_INDEX = re.compile(r"\[(\d+)\]")


def parse_error(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{PARSE_PREFIX}{path}: {message}")


def invalid(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}")


def dotted(path: str) -> str:
    """``tools[0].configs[1]`` → ``tools.0.configs.1`` (the semantic-error spelling)."""
    return _INDEX.sub(r".\1", path)


def quote(value: Any) -> str:
    """A value as JSON, the way the hosted parser echoes it (``"find"``, ``3``, ``null``)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def obj(raw: Any, path: str, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict[str, Any]:
    """An object with exactly these keys: required ones present (and not null), no others."""
    if not isinstance(raw, dict):
        raise parse_error(path, f"expected an object, got {kind(raw)}")
    req = tuple(required)
    allowed = set(req) | set(optional)
    for key in raw:
        if key not in allowed:
            raise parse_error(f"{path}.{key}", "unknown field")
    for key in req:
        if raw.get(key) is None:
            raise parse_error(f"{path}.{key}", "field required")
    return raw


def string(raw: Any, path: str, *, min_len: int = 0, max_len: int | None = None) -> str:
    if not isinstance(raw, str):
        raise parse_error(path, f"expected a string, got {kind(raw)}")
    if len(raw) < min_len:
        if min_len == 1:
            raise parse_error(path, "must not be empty")
        raise parse_error(path, f"must be at least {min_len} characters, got {len(raw)}")
    if max_len is not None and len(raw) > max_len:
        raise parse_error(path, f"must be at most {max_len} characters, got {len(raw)}")
    return raw


def opt_string(raw: Any, path: str, *, max_len: int | None = None) -> str | None:
    return None if raw is None else string(raw, path, max_len=max_len)


def boolean(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise parse_error(path, f"expected a boolean, got {kind(raw)}")
    return raw


def integer(raw: Any, path: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise parse_error(path, f"expected an integer, got {kind(raw)}")
    if minimum is not None and raw < minimum:
        raise parse_error(path, f"must be at least {minimum}, got {raw}")
    if maximum is not None and raw > maximum:
        raise parse_error(path, f"must be at most {maximum}, got {raw}")
    return raw


def array(raw: Any, path: str, *, max_items: int | None = None, what: str = "entries") -> list[Any]:
    if not isinstance(raw, list):
        raise parse_error(path, f"expected an array, got {kind(raw)}")
    if max_items is not None and len(raw) > max_items:
        raise parse_error(path, f"at most {max_items} {what} are allowed, got {len(raw)}")
    return raw


def enum(raw: Any, path: str, values: Iterable[str], *, hint: bool = True) -> str:
    """One of ``values``. ``hint=False`` leaves out the list, as the hosted policy error does."""
    allowed = tuple(values)
    if isinstance(raw, str) and raw in allowed:
        return raw
    message = f"{quote(raw)} is not a valid value"
    if hint:
        message += "; expected one of " + ", ".join(sorted(allowed))
    raise parse_error(path, message)


def tagged(raw: Any, path: str, values: Iterable[str], *, hint: bool = True) -> tuple[dict[str, Any], str]:
    """An object discriminated by ``type``: returns the object and its (valid) type."""
    if not isinstance(raw, dict):
        raise parse_error(path, f"expected an object, got {kind(raw)}")
    if raw.get("type") is None:
        raise parse_error(f"{path}.type", "field required")
    return raw, enum(raw["type"], f"{path}.type", values, hint=hint)
