"""Real MCP servers for tests, built with the ``mcp`` package.

:class:`McpTestServer` serves an ``MCPServer`` (the SDK's FastMCP) with uvicorn on a free
127.0.0.1 port in a child process, over streamable HTTP (``/mcp``) or legacy SSE (``/sse``, or
another ``sse_path``). Children are forked from a ``forkserver`` that has already imported the
SDK, so a start takes a fraction of a second; ``stop()`` kills the child (SIGKILL: a crash, as
far as clients can tell) and ``start()`` brings it back on the same port.

With ``tokens`` the server requires ``Authorization: Bearer <token>`` through the SDK's own
bearer-auth middleware (401 without a valid token). ``tokens`` can be reassigned while the
server runs (revoke: ``srv.tokens = set()``).

The child records every tool call and every presented token in files, so ``calls`` (a list of
``(tool, arguments)``) and ``tokens_seen`` span restarts and tell how often a tool really ran.

Tools: ``add(a, b)``, ``echo(text)``, ``fail(message)`` (an ``is_error`` result), ``big(size)``
(``size`` bytes of numbered lines), ``picture()`` (a PNG), ``memo()`` (an embedded text
resource), ``slow(seconds)``.

Run ``python -m tests.mcp_servers [streamable_http|sse] [port]`` to poke at one by hand.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import EmbeddedResource, TextResourceContents

HOST = "127.0.0.1"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
Transport = Literal["streamable_http", "sse"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def big_text(size: int) -> str:
    """``size`` bytes of numbered lines (what the ``big`` tool returns)."""
    lines: list[str] = []
    total = 0
    i = 0
    while total < size:
        line = f"line {i:06d}\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)[:size]


@dataclass(frozen=True)
class _Spec:
    """What the child serves (picklable)."""

    port: int
    transport: Transport
    sse_path: str
    name: str
    state: str  # directory of calls.jsonl, tokens.json, tokens_seen.jsonl
    auth: bool


class McpTestServer:
    def __init__(
        self,
        *,
        transport: Transport = "streamable_http",
        tokens: set[str] | None = None,
        name: str = "test",
        sse_path: str = "/sse",
        port: int | None = None,
    ) -> None:
        self.transport = transport
        self.name = name
        self.sse_path = sse_path
        self.port = port or free_port()
        self._state = Path(tempfile.mkdtemp(prefix="hangar-mcp-"))
        self._auth = tokens is not None
        if tokens is not None:
            self.tokens = tokens
        self._process: BaseProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + ("/mcp" if self.transport == "streamable_http" else self.sse_path)

    @property
    def tokens(self) -> set[str]:
        return set(json.loads((self._state / "tokens.json").read_text()))

    @tokens.setter
    def tokens(self, tokens: set[str]) -> None:
        tmp = self._state / "tokens.json.tmp"
        tmp.write_text(json.dumps(sorted(tokens)))
        tmp.replace(self._state / "tokens.json")

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        return [(c["tool"], c["arguments"]) for c in _read_lines(self._state / "calls.jsonl")]

    @property
    def tokens_seen(self) -> list[str]:
        return [str(t) for t in _read_lines(self._state / "tokens_seen.jsonl")]

    def calls_of(self, tool: str) -> int:
        return sum(1 for name, _ in self.calls if name == tool)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> McpTestServer:
        assert self._process is None, "already running"
        spec = _Spec(self.port, self.transport, self.sse_path, self.name, str(self._state), self._auth)
        process = _context().Process(target=_serve, args=(spec,), name=f"mcp-test-{self.port}", daemon=True)
        process.start()
        self._process = process
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return self
            except OSError:
                if not process.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"test MCP server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL): its connections drop as in a crash."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.join(timeout=10)
        process.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._state, ignore_errors=True)


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _read_lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, item: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\n")


# --------------------------------------------------------------------------- the child


def _serve(spec: _Spec) -> None:
    app = _app(spec)
    config = uvicorn.Config(app, host=HOST, port=spec.port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()


def _app(spec: _Spec) -> Any:
    mcp = _build(spec)
    if spec.transport == "sse":
        return mcp.sse_app(sse_path=spec.sse_path, host=HOST)
    return mcp.streamable_http_app(host=HOST)


def _build(spec: _Spec) -> MCPServer:
    state = Path(spec.state)
    base = f"http://{HOST}:{spec.port}"

    class Tokens:
        """The SDK's ``TokenVerifier`` over the accepted tokens in ``tokens.json``."""

        async def verify_token(self, token: str) -> AccessToken | None:
            _append(state / "tokens_seen.jsonl", token)
            accepted = json.loads((state / "tokens.json").read_text())
            if token not in accepted:
                return None
            return AccessToken(token=token, client_id="hangar-test", scopes=[])

    auth: dict[str, Any] = {}
    if spec.auth:
        url = base + ("/mcp" if spec.transport == "streamable_http" else spec.sse_path)
        auth = {
            "token_verifier": Tokens(),
            "auth": AuthSettings(issuer_url=base, resource_server_url=url, validate_token_resource=False),
        }
    mcp = MCPServer(spec.name, log_level="WARNING", **auth)

    def record(tool: str, arguments: dict[str, Any]) -> None:
        _append(state / "calls.jsonl", {"tool": tool, "arguments": arguments})

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        record("add", {"a": a, "b": b})
        return a + b

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        record("echo", {"text": text})
        return text

    @mcp.tool()
    def fail(message: str) -> str:
        """Always fails with the given message."""
        record("fail", {"message": message})
        raise ToolError(message)

    @mcp.tool()
    def big(size: int) -> str:
        """Return size bytes of numbered lines."""
        record("big", {"size": size})
        return big_text(size)

    @mcp.tool()
    def picture() -> Image:
        """A tiny PNG image."""
        record("picture", {})
        return Image(data=PNG, format="png")

    @mcp.tool()
    def memo() -> EmbeddedResource:
        """An embedded text resource."""
        record("memo", {})
        return EmbeddedResource(
            type="resource",
            resource=TextResourceContents(uri="memo://1", mime_type="text/plain", text="remember the milk"),
        )

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        record("slow", {"seconds": seconds})
        await anyio.sleep(seconds)
        return "done"

    return mcp


if __name__ == "__main__":
    kind: Transport = "sse" if sys.argv[1:2] == ["sse"] else "streamable_http"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else free_port()
    state_dir = tempfile.mkdtemp(prefix="hangar-mcp-")
    print(f"serving {kind} on {HOST}:{port} (state in {state_dir}, pid {os.getpid()})", flush=True)
    _serve(_Spec(port, kind, "/sse", "manual", state_dir, False))
