"""An agent's MCP server behind an MCP tunnel, end to end: a real ``hangar serve`` (the official
client drives it), a tunnel made through the API with a CA certificate, a ``hangar tunnel``
subprocess, and a real MCP server on a loopback port that only the tunnel client is told about.

The scripted model calls the model-facing tool name; the call reaches the private server through
the relay and its result comes back to the model. Killing the relay fails the next turn's MCP
use with a ``session.error`` (``mcp_connection_failed_error``) while the session still answers,
although the MCP server itself is still up (so Hangar had no other way to it); a new relay brings
the tools back. Another workspace's agent naming the tunnel's URL gets nothing through it.

Runs on SQLite only: nothing here depends on the database backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaTunnel, BetaTunnelToken
from anthropic.types.beta.tunnels import BetaTunnelCertificate

from hangar.testing import ServerProcess
from tests.api.test_cli import create_key
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.mcp.conftest import ALLOW_ALL, last_turn, of_type, session_for, tool, turn
from tests.mcp_servers import McpTestServer
from tests.tunnel.certs import issue

PARENT = "agents.tunnel.test"


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("agent-tunnel"), api_key=API_KEY, env={"HANGAR_TUNNEL_DOMAIN": PARENT}
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(hangar: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=hangar.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c


class Relay:
    """A ``hangar tunnel`` subprocess (the token in its environment, not on the command line)."""

    def __init__(self, server: str, token: str, route: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
        env["HANGAR_TUNNEL_TOKEN"] = token
        cmd = [sys.executable, "-m", "hangar", "tunnel", "--server", server, "--route", route]
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "connected: tunnel" not in self.log():
            assert self.proc.poll() is None, f"hangar tunnel exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"hangar tunnel did not connect:\n{self.log()}"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.kill()


def new_tunnel(client: anthropic.Anthropic) -> tuple[BetaTunnel, str]:
    tunnel = strict(BetaTunnel, client.beta.tunnels.create(display_name="private network"))
    cert = client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=issue("ca").pem)
    strict(BetaTunnelCertificate, cert)
    token = strict(BetaTunnelToken, client.beta.tunnels.reveal_token(tunnel.id))
    return tunnel, token.tunnel_token


def connection_errors(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.error.type, e.error.mcp_server_name) for e in of_type(events, "session.error")]


def test_agent_calls_a_private_mcp_server_through_a_tunnel(
    hangar: ServerProcess, client: anthropic.Anthropic, relays: list[Relay], tmp_path: Path
) -> None:
    with McpTestServer(name="private") as private:
        # Hangar is never told about this port: only the relay's --route names it.
        assert all(str(private.port) not in v for v in hangar.extra_env.values())
        tunnel, token = new_tunnel(client)
        route = f"files={private.base_url}"
        relay = Relay(hangar.base_url, token, route, tmp_path / "relay1.log")
        relays.append(relay)
        relay.wait_connected()

        url = f"https://files.{tunnel.domain}/mcp"
        sid = session_for(client, [{"name": "private", "url": url}], {"private": ALLOW_ALL})
        events = last_turn(turn(client, sid, tool("mcp__private__add", a=20, b=22), 1))
        use = of_type(events, "agent.mcp_tool_use")[0]
        result = of_type(events, "agent.mcp_tool_result")[0]
        assert (use.name, use.mcp_server_name, use.input) == ("add", "private", {"a": 20, "b": 22})
        assert result.mcp_tool_use_id == use.id and result.is_error is False
        assert [b.text for b in result.content] == ["42"]
        assert (
            of_type(events, "agent.message")[0].content[0].text == "The mcp__private__add tool returned: 42"
        )
        assert not of_type(events, "session.error")
        assert private.calls == [("add", {"a": 20, "b": 22})]

        # The relay goes away; the MCP server stays up. Hangar has no other way to it: the next
        # turn's MCP use fails with mcp_connection_failed, and the session still answers.
        relay.kill()
        for n in (2, 3):
            events = last_turn(turn(client, sid, tool("mcp__private__add", a=n, b=n), n))
            assert connection_errors(events) == [("mcp_connection_failed_error", "private")]
            # The error says why (the tunnel's own words), never a URL or token.
            message = of_type(events, "session.error")[0].error.message
            assert "no `hangar tunnel` client is connected" in message or "disconnected" in message
            assert token not in message
            assert events[-1].stop_reason.type == "end_turn"
            assert len(of_type(events, "agent.message")) == 1
            results = of_type(events, "agent.mcp_tool_result")
            assert all(r.is_error for r in results)  # a call on the old connection, if any
        assert private.calls == [("add", {"a": 20, "b": 22})]

        # A new relay (same token) brings the server back on the next turn.
        fresh = Relay(hangar.base_url, token, route, tmp_path / "relay2.log")
        relays.append(fresh)
        fresh.wait_connected()
        events = last_turn(turn(client, sid, tool("mcp__private__echo", text="back"), 4))
        assert not of_type(events, "session.error")
        assert [b.text for b in of_type(events, "agent.mcp_tool_result")[0].content] == ["back"]

        # Another workspace's agent naming this tunnel's URL gets nothing through it.
        key = create_key(hangar, "--workspace", "agent-tunnel-b", "--name", "other workspace")
        with anthropic.Anthropic(base_url=hangar.base_url, api_key=key, max_retries=0) as other:
            sid_b = session_for(other, [{"name": "private", "url": url}], {"private": ALLOW_ALL})
            events = last_turn(turn(other, sid_b, tool("mcp__private__echo", text="stolen"), 1))
            assert connection_errors(events) == [("mcp_connection_failed_error", "private")]
            # the same words as for a domain no tunnel has: nothing about the other workspace
            assert "no tunnel has the domain" in of_type(events, "session.error")[0].error.message
            assert not of_type(events, "agent.mcp_tool_result")
            assert events[-1].stop_reason.type == "end_turn"
        assert private.calls_of("echo") == 1
        # ... while the tunnel is up for its own workspace.
        events = last_turn(turn(client, sid, tool("mcp__private__echo", text="mine"), 5))
        assert [b.text for b in of_type(events, "agent.mcp_tool_result")[0].content] == ["mine"]
        assert private.calls_of("echo") == 2
        client.beta.tunnels.archive(tunnel.id)
