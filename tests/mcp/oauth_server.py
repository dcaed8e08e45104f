"""A real OAuth token endpoint for tests: a small Starlette app served by uvicorn on loopback.

``POST /token`` with ``grant_type=refresh_token`` and the current refresh token issues a new
access token (``<prefix>-<n>``), rotates the refresh token, and tells the :class:`McpTestServer`
it guards to accept only the new access token (so a stale token gets 401). Every request is
recorded in ``requests`` (form fields, without the client's Authorization header).
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.mcp_servers import McpTestServer, free_port


class TokenEndpoint:
    def __init__(self, guarded: McpTestServer, *, expires_in: int = 3600) -> None:
        self.guarded = guarded
        self.expires_in = expires_in
        self.port = free_port()
        self.prefix = "AT-" + secrets.token_hex(6)
        self.refresh_token = "RT-" + secrets.token_hex(8)
        self.issued: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def _token(self, request: Request) -> JSONResponse:
        form = dict(await request.form())
        self.requests.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.refresh_token:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = f"{self.prefix}-{len(self.issued) + 1}"
        self.issued.append(access)
        self.refresh_token = "RT-" + secrets.token_hex(8)
        self.guarded.tokens = {access}
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "refresh_token": self.refresh_token,
            }
        )

    def start(self) -> TokenEndpoint:
        app = Starlette(routes=[Route("/token", self._token, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("token endpoint did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> TokenEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
