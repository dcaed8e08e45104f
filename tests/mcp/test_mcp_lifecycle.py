"""A session's MCP connections are closed when the session is archived or deleted.

The MCP protocol this SDK speaks is stateless (no session to DELETE), so what is left to observe
is the TCP connections themselves. Hangar reaches the MCP server through :class:`Forwarder`, a
TCP forwarder on 127.0.0.1 that keeps its side of every connection open until *Hangar* closes it
(when the MCP server drops an idle keep-alive connection, the forwarder dials it again for the
next request), so a connection that goes away was closed by Hangar.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import pytest

from tests.mcp.conftest import ALLOW_ALL, of_type, session_for, tool, turn
from tests.mcp_servers import HOST, McpTestServer


class Forwarder:
    """See the module docstring. ``open`` counts client connections Hangar has not closed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server((HOST, 0))
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._from_client, args=(client,), daemon=True).start()

    def _from_client(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        alive = threading.Event()
        try:
            while data := client.recv(65536):
                if upstream is None or not alive.is_set():
                    if upstream is not None:
                        upstream.close()
                    upstream = socket.create_connection((HOST, self.upstream_port))
                    alive.set()
                    threading.Thread(
                        target=self._to_client, args=(upstream, client, alive), daemon=True
                    ).start()
                upstream.sendall(data)
        except OSError:
            pass
        finally:  # Hangar closed the connection (or reset it)
            with self._lock:
                self.open -= 1
            client.close()
            if upstream is not None:
                upstream.close()

    @staticmethod
    def _to_client(upstream: socket.socket, client: socket.socket, alive: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:  # the MCP server closed it: keep Hangar's side, dial again on the next request
            alive.clear()

    def wait_open(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.open != count:
            assert time.monotonic() < deadline, f"{self.open} connections open, expected {count}"
            time.sleep(0.05)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def forwarder(tools_server: McpTestServer) -> Iterator[Forwarder]:
    fwd = Forwarder(tools_server.port)
    yield fwd
    fwd.close()


def test_archive_and_delete_close_the_sessions_mcp_connections(
    client: anthropic.Anthropic, forwarder: Forwarder
) -> None:
    servers = [{"name": "tools", "url": forwarder.url}]
    opened: list[int] = []
    sids: list[str] = []
    for n in (1, 2):
        sid = session_for(client, servers, {"tools": ALLOW_ALL})
        events = turn(client, sid, tool("mcp__tools__add", a=n, b=n), 1)
        assert of_type(events, "agent.mcp_tool_result")[0].content[0].text == str(2 * n)
        sids.append(sid)
        opened.append(forwarder.open - sum(opened))
    assert all(n >= 1 for n in opened), opened

    # Idle sessions keep their connections (past the MCP server's own 5 s keep-alive, too).
    time.sleep(6)
    assert forwarder.open == sum(opened)

    client.beta.sessions.archive(sids[0])
    forwarder.wait_open(opened[1])
    client.beta.sessions.delete(sids[1])
    forwarder.wait_open(0)
