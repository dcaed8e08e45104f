"""Request helpers shared by the route modules."""

from __future__ import annotations

import json
from typing import Any, Literal, cast

from fastapi import Request

from hangar.errors import InvalidRequest
from hangar.services import Services


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object. An empty body (the SDK's body-less POSTs) reads as ``{}``."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Invalid JSON in request body: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return data


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {raw!r} is not an integer") from exc
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise InvalidRequest(f"{name}: {raw!r} is not a boolean")


def query_order(request: Request, default: Literal["asc", "desc"]) -> Literal["asc", "desc"]:
    raw = request.query_params.get("order") or default
    if raw not in ("asc", "desc"):
        raise InvalidRequest(f"order: {raw!r} is not a valid value; expected one of asc, desc")
    return cast(Literal["asc", "desc"], raw)


def query_list(request: Request, name: str) -> list[str]:
    """Array parameters arrive as ``name[]=a&name[]=b`` (the SDK's encoding) or ``name=a``."""
    return request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)


def page_envelope(data: list[Any], next_page: str | None) -> dict[str, Any]:
    return {"data": data, "next_page": next_page}
