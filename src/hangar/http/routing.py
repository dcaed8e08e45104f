"""The routers' route class: handlers' dicts go straight to ``json.dumps``.

Every handler returns JSON-native dicts and lists (the ``wire`` renderers build them), but
FastAPI would pass them through ``jsonable_encoder`` first, which walks every value in Python:
1.4 ms for a page of 50 events, more than the rest of the request. :class:`JsonRoute` wraps
each endpoint so that its result is written by :class:`JsonBody` instead; a value that is not
JSON-native (none should be) still gets FastAPI's encoder rather than an error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


class JsonBody(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):
            text = json.dumps(jsonable_encoder(content), ensure_ascii=False, separators=(",", ":"))
        return text.encode()


def _direct(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the signature through __wrapped__
    async def run(*args: Any, **kwargs: Any) -> Any:
        out = await endpoint(*args, **kwargs)
        return JsonBody(out) if isinstance(out, dict | list) else out

    return run


class JsonRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _direct(endpoint), **kwargs)


def api_router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` whose routes are :class:`JsonRoute`."""
    return APIRouter(route_class=JsonRoute, **kwargs)
