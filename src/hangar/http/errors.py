"""The one renderer of the API error envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hangar.errors import ApiError, InternalError, InvalidRequest, MethodNotAllowed, NotFound
from hangar.wire.common import json_path

log = logging.getLogger(__name__)


def error_body(error_type: str, message: str, request_id: str | None, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        err["details"] = details
    body: dict[str, Any] = {"type": "error", "error": err}
    if request_id:
        body["request_id"] = request_id
    return body


def render(exc: ApiError, request_id: str | None) -> JSONResponse:
    headers = {}
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return JSONResponse(
        error_body(exc.error_type, exc.message, request_id, exc.details),
        status_code=exc.status,
        headers=headers,
    )


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render(exc, _rid(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        loc = tuple(p for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        return render(InvalidRequest(f"{json_path(loc)}: {err.get('msg', 'invalid value')}"), _rid(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return render(NotFound("Not found"), _rid(request))
        if exc.status_code == 405:
            resp = render(MethodNotAllowed(f"Method {request.method} not allowed"), _rid(request))
            if exc.headers and "Allow" in exc.headers:
                resp.headers["allow"] = exc.headers["Allow"]
            return resp
        err = InvalidRequest(str(exc.detail))
        resp = render(err, _rid(request))
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": _rid(request), "path": request.url.path})
        return render(InternalError("Internal server error"), _rid(request))
